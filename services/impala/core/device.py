"""Torch device selection: ``auto`` means CUDA when present, else CPU; the same code path on both."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return name
