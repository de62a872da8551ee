"""Checkpoints of a learner: what goes in, when, and resuming from the latest one.

A checkpoint holds the model, optimizer and scheduler states, the counters (learner step, env steps,
policy version, episodes and the window of recent returns) and the settings of the run. Writing is
atomic and keeps the newest ``keep`` files (``impala.core.checkpoints``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impala.core.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from impala.core.learn import LearnerState
from impala.learner.keep_best import KeepBest
from impala.learner.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointInfo:
    """Where and what a checkpoint wrote (the fields of a ``checkpoints`` hash entry)."""

    path: Path
    step: int
    bytes: int
    created_unix: float


def build_payload(state: LearnerState, progress: Progress, config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict; ``model`` and ``policy_version`` are what ``load_policy_weights`` reads."""
    return {
        **state.state_dict(),
        **progress.to_payload(),
        "config": config,
        # The model's spec (spaces included): eval and export rebuild the model from it, with no env.
        "model_spec": state.model.spec.to_dict(),
    }


class Checkpointer:
    """Saves periodically (every ``interval_s``) and on demand, and restores the latest.

    Args:
        directory: where ``ckpt-<step>.pt`` files live.
        keep: number of newest checkpoints kept.
        interval_s: period of ``due()``.
        config: the run's public settings, stored in every checkpoint.
        keep_best: when set, every checkpoint is also offered as ``best.pt`` scored by the training
            mean return (the learner sets it when periodic evaluation is off).
    """

    def __init__(
        self,
        directory: Path,
        *,
        keep: int,
        interval_s: float,
        config: dict[str, Any],
        keep_best: KeepBest | None = None,
    ) -> None:
        self.directory, self.keep, self.interval_s, self.config = directory, keep, interval_s, config
        self.keep_best = keep_best
        self.last: CheckpointInfo | None = None
        self._next_due = time.monotonic() + interval_s

    def due(self) -> bool:
        return time.monotonic() >= self._next_due

    def postpone(self) -> None:
        """Skip this period (nothing new to save, or saving failed)."""
        self._next_due = time.monotonic() + self.interval_s

    def save(self, state: LearnerState, progress: Progress) -> CheckpointInfo:
        """Write a checkpoint now; the periodic clock restarts from here."""
        started = time.monotonic()
        payload = build_payload(state, progress, self.config)
        path = save_checkpoint(self.directory, payload, state.learner_steps, self.keep)
        if self.keep_best is not None and progress.returns:
            self.keep_best.offer(progress.return_mean, payload)
        info = CheckpointInfo(path, state.learner_steps, path.stat().st_size, time.time())
        self.last = info
        self._next_due = time.monotonic() + self.interval_s
        log.info(
            "checkpoint written",
            extra={
                "path": str(path),
                "step": info.step,
                "bytes": info.bytes,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return info

    def restore(self, state: LearnerState, device: str) -> Progress | None:
        """Load the latest checkpoint into ``state``; its Progress, or None when there is none."""
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        payload = load_checkpoint(path, map_location=device)
        state.load_state_dict(payload)
        progress = Progress.from_payload(payload)
        self.last = CheckpointInfo(path, state.learner_steps, path.stat().st_size, path.stat().st_mtime)
        log.info(
            "resumed from checkpoint",
            extra={
                "path": str(path),
                "learner_step": state.learner_steps,
                "env_steps": state.env_steps,
                "policy_version": progress.policy_version,
            },
        )
        return progress
