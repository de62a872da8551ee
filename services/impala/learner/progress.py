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
    """Env steps per second over the last ``window_s`` seconds of status reports.

    Over a window, not between consecutive reports: a learner whose updates are further apart than the
    status interval (the deep ResNet on CPU takes ~6 s per update) otherwise reads 0 between updates and
    a burst of one update per report interval at each (Pong: 0, 0, 0, 0, 0, 640 for ~107 real).
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0

    def update(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, count))
        # The base is the newest report at least window_s old (the oldest one while warming up).
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        since, base = self._samples[0]
        if now > since:
            self.rate = (count - base) / (now - since)
        return self.rate
