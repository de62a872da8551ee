"""Keep-best checkpoint: ``best.pt`` holds the weights that scored highest so far, as results are reported.

The score is the periodic evaluation's mean return with sampled actions when evaluation runs (the
policy as trained and as the pools act it, so ``impala eval --checkpoint best.pt`` reproduces it), else
the training mean return of the last 100 episodes at each checkpoint (ADR 0020). The file carries its
score (``payload["best"]``), so a restarted learner only replaces it with something better. It is
written atomically beside the ``ckpt-*.pt`` files and never counted among the kept ones.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from impala.core.checkpoints import best_checkpoint_path, load_checkpoint, write_atomic
from impala.core.errors import UserError

log = logging.getLogger(__name__)


class KeepBest:
    """Replaces ``<directory>/best.pt`` whenever a higher score is offered.

    Args:
        directory: the run's checkpoint directory.
        source: what the score measures (``"eval_sampled"`` or ``"train_mean"``), stored with it.
    """

    def __init__(self, directory: Path, source: str) -> None:
        self.path, self.source = best_checkpoint_path(directory), source
        self.score = _stored_score(self.path)

    def offer(self, score: float, payload: dict[str, Any]) -> bool:
        """Write ``payload`` as ``best.pt`` when ``score`` beats the best so far; True when written."""
        if not math.isfinite(score) or (self.score is not None and score <= self.score):
            return False
        write_atomic(self.path, {**payload, "best": {"score": score, "source": self.source}})
        self.score = score
        log.info("best checkpoint written", extra={"path": str(self.path), "score": score, "source": self.source})
        return True


def _stored_score(path: Path) -> float | None:
    """The score of an existing ``best.pt`` (None when there is none or it cannot be read)."""
    if not path.is_file():
        return None
    try:
        payload = load_checkpoint(path)
    except UserError as err:
        log.warning("unreadable best checkpoint; the next best replaces it", extra={"error": str(err)})
        return None
    best = payload.get("best") or {}
    return float(best["score"]) if "score" in best else None
