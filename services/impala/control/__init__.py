"""Control API (FastAPI, torch-free)."""
