"""The learner's counters beyond those of ``LearnerState`` (learner and env steps), and their place
in a checkpoint.

``policy_version`` is the version of the learner's current parameters: it grows by one each time the
loop hands a new set to the publisher (every ``publish_interval`` updates) and is restored from the
checkpoint, so versions keep increasing across restarts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RETURN_WINDOW = 100  # episodes in the "mean return" the status, metrics and CartPole target use
LAG_WINDOW = 100  # rollouts in the "mean policy lag" of the status


@dataclass
class Progress:
    """Counters saved with every checkpoint and reported in the status heartbeat."""

    policy_version: int = 0
    episodes: int = 0
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=RETURN_WINDOW))
    lags: deque[int] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))

    def record_episodes(self, returns: Iterable[float], count: int | None = None) -> int:
        """Add completed episodes; ``count`` when more ended than ``returns`` holds. Returns how many."""
        added = list(returns)
        self.returns.extend(added)
        ended = len(added) if count is None else count
        self.episodes += ended
        return ended

    @property
    def return_mean(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else 0.0

    @property
    def lag_mean(self) -> float:
        return sum(self.lags) / len(self.lags) if self.lags else 0.0

    def to_payload(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "episodes": self.episodes,
            "episode_returns": list(self.returns),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Progress:
        progress = cls(
            policy_version=int(payload.get("policy_version", 0)),
            episodes=int(payload.get("episodes", 0)),
        )
        progress.returns.extend(float(r) for r in payload.get("episode_returns", ()))
        return progress


class RateMeter:
    """Env steps per second between consecutive status reports."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last[0]:
            self.rate = (count - self._last[1]) / (now - self._last[0])
        self._last = (now, count)
        return self.rate
