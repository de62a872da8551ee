"""Capped exponential backoff with full jitter, for every long-lived client (Redis, gRPC).

Delay of attempt n (0-based) is uniform in ``[0, min(cap, base * 2**n)]`` ("full jitter", AWS
Architecture Blog, "Exponential Backoff And Jitter"): many clients that lost the same server spread
their reconnects instead of arriving together. Callers log one line per failure; this module only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for consecutive failures; ``reset()`` after a success.

    Args:
        base_s: ceiling of the first delay.
        cap_s: largest ceiling, reached after ``log2(cap_s / base_s)`` failures.
        rng: source of jitter (seed it in tests).
    """

    base_s: float = 0.05
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={self.base_s} cap_s={self.cap_s}")

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # Exponent capped so 2**n never overflows a float after days of failures.
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures, 64))

    def next_delay(self) -> float:
        """Draw the next delay and count one more failure."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Call after a success: the next failure waits at most ``base_s`` again."""
        self.failures = 0

    def sleep(self, stop: threading.Event | None = None) -> bool:
        """Block for the next delay; returns True early when ``stop`` is set."""
        delay = self.next_delay()
        if stop is None:
            threading.Event().wait(delay)
            return False
        return stop.wait(delay)

    async def sleep_async(self, stop: asyncio.Event | None = None) -> bool:
        """Await the next delay; returns True early when ``stop`` is set."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        return stop.is_set()
