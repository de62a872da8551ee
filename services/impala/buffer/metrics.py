"""Prometheus metrics of the rollout buffer, declared once on an injected registry.

The producer (inside an ActorPool) registers them on the pool's registry. The pool owns
``impala_actorpool_backpressure_wait_seconds_total`` and ``impala_actorpool_rollouts_shed_total``:
it passes ``on_wait`` to the producer and counts a ``put`` that returned False.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge


@dataclass(frozen=True)
class BufferMetrics:
    depth: Gauge
    capacity: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BufferMetrics:
        return cls(
            depth=Gauge(
                "impala_buffer_depth_rollouts",
                "Rollouts in the Redis stream (unread plus read but not yet acknowledged).",
                registry=registry,
            ),
            capacity=Gauge(
                "impala_buffer_capacity_rollouts",
                "Rollouts the stream may hold before producers wait (or shed).",
                registry=registry,
            ),
        )
