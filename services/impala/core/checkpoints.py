"""Atomic checkpoints on disk: written to a temp file in the same directory, fsynced, then
``os.replace``d into ``ckpt-<learner step>.pt``, so a crash never leaves a torn file; the newest
``keep`` are kept. ``best.pt`` (the keep-best checkpoint, ``impala.learner.keep_best``) is written the
same way and is never one of the ``keep``. The payload is a plain dict (model, optimizer, scheduler, counters, config)."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from impala.core.errors import UserError

_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")


BEST_NAME = "best.pt"


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:012d}.pt"


def best_checkpoint_path(directory: Path) -> Path:
    """The keep-best checkpoint of a run (a name ``list_checkpoints`` never matches)."""
    return directory / BEST_NAME


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def write_atomic(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` into a temp file beside ``path``, fsync, ``os.replace``, fsync the directory: a
    reader (or a crash) sees the old file or the new one, never a torn one."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_checkpoint(directory: Path, payload: dict[str, Any], step: int, keep: int) -> Path:
    """Write atomically, then delete all but the newest ``keep``; returns the path."""
    final = write_atomic(checkpoint_path(directory, step), payload)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """The payload of ``path``; ``UserError`` (one line) when it is missing or no impala checkpoint."""
    hint = "pass a ckpt-*.pt file from a run's checkpoints/ directory"
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; {hint}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path} is not an impala checkpoint ({reason}); {hint}") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(f"{path} is not an impala checkpoint (no 'model' entry); {hint}")
    return payload


def load_policy_weights(path: Path, model: torch.nn.Module) -> int:
    """Load a checkpoint's model weights into ``model``; returns their policy version."""
    payload = load_checkpoint(path)
    model.load_state_dict(payload["model"])
    return int(payload.get("policy_version", 0))
