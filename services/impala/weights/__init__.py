"""Weight-broadcast service (torch-free)."""
