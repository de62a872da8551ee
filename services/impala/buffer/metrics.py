"""Prometheus metrics of the rollout buffer, read from Redis when Prometheus scrapes.

The producer (inside an ActorPool) registers them on the pool's registry. The pool owns
``impala_actorpool_backpressure_wait_seconds_total`` and ``impala_actorpool_rollouts_shed_total``:
it passes ``on_wait`` to the producer and counts a ``put`` that returned False.

Depth is sampled (``XLEN`` and the consumer group's pending count in one round trip) at each scrape,
not set by the producer after its own write: that value is the stream at its fullest and read 16 of
16 while ``XLEN`` read 8 most of the time (ADR 0023). When Redis does not answer within the timeout
the scrape carries no depth series (absent, never a stale number).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from impala.core.redis_client import sync_client
from impala.core.redis_keys import LEARNER_GROUP, RunKeys

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 1.0

_DEPTH = ("impala_buffer_depth_rollouts", "Rollouts in the Redis stream (unread plus read but not yet acknowledged).")
_UNREAD = ("impala_buffer_unread_rollouts", "Rollouts in the stream that no learner has read yet.")
_CAPACITY = ("impala_buffer_capacity_rollouts", "Rollouts the stream may hold before producers wait (or shed).")


class BufferMetrics(Collector):
    """``impala_buffer_*``: capacity (configured) and depth/unread (read from Redis per scrape)."""

    def __init__(self, redis_url: str, keys: RunKeys, capacity: int, registry: CollectorRegistry) -> None:
        self.keys, self.capacity = keys, capacity
        self._client = sync_client(redis_url, socket_timeout_s=SCRAPE_TIMEOUT_S)
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc) for name, doc in (_DEPTH, _UNREAD, _CAPACITY)]

    def collect(self) -> Iterable[Metric]:
        metrics: list[Metric] = [GaugeMetricFamily(*_CAPACITY, value=self.capacity)]
        sample = self.sample()
        if sample is not None:
            depth, unread = sample
            metrics += [GaugeMetricFamily(*_DEPTH, value=depth), GaugeMetricFamily(*_UNREAD, value=unread)]
        return metrics

    def sample(self) -> tuple[int, int] | None:
        """(entries in the stream, entries no consumer has read), or None when Redis does not answer.

        Acknowledged entries are deleted in the same transaction, so unread = length - pending.
        """
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.xlen(self.keys.rollouts)
                pipe.xpending(self.keys.rollouts, LEARNER_GROUP)
                length, pending = pipe.execute(raise_on_error=False)
        except redis.RedisError as err:
            log.warning("buffer depth not sampled", extra={"error": repr(err)})
            return None
        if isinstance(length, Exception):
            log.warning("buffer depth not sampled", extra={"error": repr(length)})
            return None
        # Before the learner creates its consumer group (NOGROUP) nothing has been read.
        held = 0 if isinstance(pending, Exception) else int(pending["pending"])
        return int(length), max(0, int(length) - held)

    def close(self) -> None:
        self._client.close()
