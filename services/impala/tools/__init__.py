"""Offline tools: evaluate and export checkpoints, benchmarks."""
