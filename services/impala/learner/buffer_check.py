"""Detects a rollout buffer too small for the learner's batch, the one configuration that deadlocks
without an error: the pools hold their clients while the stream holds ``buffer_capacity`` entries
(read but unacknowledged ones included), and the learner acknowledges only after a complete batch.

Only a starved learner looks: after ``after_s`` without a step (pauses excluded) it reads the live
pools' heartbeats. Pools share the stream, so the largest capacity is the one that keeps producing
until the stream reaches it; below what one batch needs (``impala.buffer.capacity.rank_buffer_floor``)
no batch can complete. Then it logs an error naming both numbers and the fix (at most once per
``log_every_s``) and holds ``impala_learner_buffer_too_small`` at 1 until a step is taken or a large
enough pool shows up. It never stops the learner: during a rolling update the old pools may briefly
be the only live ones. Pools that do not report a capacity (older versions) could be large enough,
so while one is live nothing is concluded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import redis
from prometheus_client import Gauge

from impala.core.redis_records import PoolStatus

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0


class BufferCheck:
    """Compares the live pools' ``buffer_capacity`` with what one batch needs, while starved.

    Args:
        pools: reads the live pools' statuses (``impala.core.pools.live_pools``); may raise
            ``redis.RedisError``.
        need: rollouts the stream must hold for a batch to complete (B for one learner).
        batch_size: B, for the message.
        ranks: learner ranks sharing B, for the message.
        gauge: ``impala_learner_buffer_too_small``.
        after_s: seconds without a step before the first look, and between looks.
        log_every_s: least time between two error lines while the condition holds.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        pools: Callable[[], Mapping[str, PoolStatus]],
        *,
        need: int,
        batch_size: int,
        ranks: int,
        gauge: Gauge,
        after_s: float,
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pools, self.need, self.batch_size, self.ranks = pools, need, batch_size, ranks
        self.gauge, self.after_s, self.log_every_s, self.clock = gauge, after_s, log_every_s, clock
        self.looks = 0  # reads of the pools' statuses so far
        self.capacity: int | None = None  # the largest live capacity the last look found (None: unknown)
        self._starved_since: float | None = None
        self._next_look = 0.0
        self._next_log = 0.0

    def fed(self) -> None:
        """A step was taken, or the run is paused: not starved (the next wait starts afresh)."""
        self._starved_since = None
        self.gauge.set(0)

    def starved(self) -> None:
        """One more look for a batch came back empty; checks the pools once ``after_s`` has passed."""
        now = self.clock()
        if self._starved_since is None:
            self._starved_since = now
        if now - self._starved_since < self.after_s or now < self._next_look:
            return
        self._next_look = now + self.after_s
        try:
            self.capacity = capacity = self._largest_capacity()
        except redis.RedisError as err:  # the check is advisory: the loop goes on waiting
            log.warning("cannot read the pools' buffer capacity", extra={"error": str(err)})
            return
        self.looks += 1
        too_small = capacity is not None and capacity < self.need
        self.gauge.set(int(too_small))
        if too_small and now >= self._next_log:
            self._next_log = now + self.log_every_s
            log.error(
                f"no batch can complete: the largest live ActorPool buffer_capacity ({capacity}) is below the "
                f"{self.need} rollouts the learner must hold for one batch (batch_size {self.batch_size}, "
                f"{self.ranks} rank(s)); raise actorpool.buffer_capacity to at least {self.need}, or lower "
                "learner.batch_size",
                extra={
                    "buffer_capacity": capacity,
                    "needed": self.need,
                    "batch_size": self.batch_size,
                    "ranks": self.ranks,
                    "starved_s": round(now - self._starved_since, 1),
                },
            )

    def _largest_capacity(self) -> int | None:
        """The largest capacity among the live pools; None when none is live or one does not say."""
        capacities = [pool.buffer_capacity for pool in self.pools().values()]
        if not capacities or None in capacities:
            return None
        return max(c for c in capacities if c is not None)
