"""Prometheus metrics of the ActorPool, declared once on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from impala.core.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, zero_labels

# (gRPC code, reason) of every way the pool ends a stream (impala.actorpool.validation, servicer,
# session, and the token check of impala.core.grpc_server; tests/monitoring/test_exposition.py checks
# the sources raise no other): exported at 0 from the start.
_INVALID = ("client_name", "num_envs", "observation_spec", "action_spec", "observation", "final_observation", "reward")
REJECTIONS: tuple[tuple[str, str], ...] = (
    *(("INVALID_ARGUMENT", r) for r in (*_INVALID, "terminated", "truncated", "first_step", "order")),
    *(("FAILED_PRECONDITION", r) for r in ("protocol_version", "observation_spec", "action_spec", "num_actions")),
    ("UNAUTHENTICATED", "missing_token"),
    ("UNAUTHENTICATED", "unknown_token"),
    ("RESOURCE_EXHAUSTED", "max_clients"),
    ("DEADLINE_EXCEEDED", "timeout"),
    ("UNAVAILABLE", "draining"),
    ("UNAVAILABLE", "max_age"),
    ("INTERNAL", "inference"),
)
# Why a weight version came over gRPC chunks instead of the bulk data plane (impala.weights.subscriber).
BULK_FALLBACK_REASONS = (
    "checksum",
    "fingerprint",
    "fetch",
    "unauthenticated",
    "busy",
    "gone",
    "malformed",
    "too_large",
)


@dataclass(frozen=True)
class PoolMetrics:
    connected_clients: Gauge
    env_steps: Counter
    inference_batch_size: Histogram
    inference_latency: Histogram
    action_latency: Histogram
    rollouts_produced: Counter
    rollouts_shed: Counter
    rejected_streams: Counter
    backpressure_wait: Counter
    policy_version: Gauge
    paused: Gauge
    weight_updates: Counter
    weight_bulk_fallbacks: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PoolMetrics:
        metrics = cls._declare(registry)
        zero_labels(metrics.rollouts_produced, ("true", "false"))
        zero_labels(metrics.rejected_streams, REJECTIONS)
        zero_labels(metrics.weight_bulk_fallbacks, BULK_FALLBACK_REASONS)
        return metrics

    @classmethod
    def _declare(cls, registry: CollectorRegistry) -> PoolMetrics:
        return cls(
            connected_clients=Gauge(
                "impala_actorpool_connected_clients", "Client streams past the handshake.", registry=registry
            ),
            env_steps=Counter(
                "impala_actorpool_env_steps_total", "Env steps received from clients.", registry=registry
            ),
            inference_batch_size=Histogram(
                "impala_actorpool_inference_batch_size",
                "Observations per inference pass.",
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            inference_latency=Histogram(
                "impala_actorpool_inference_latency_seconds",
                "Wall time of one batched forward pass.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            action_latency=Histogram(
                "impala_actorpool_action_latency_seconds",
                "From a Step received to its Actions sent (includes batching, pause and backpressure).",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            rollouts_produced=Counter(
                "impala_actorpool_rollouts_produced_total",
                "Rollouts handed to the buffer; partial = shorter than the unroll length.",
                ["partial"],
                registry=registry,
            ),
            rollouts_shed=Counter(
                "impala_actorpool_rollouts_shed_total",
                "Rollouts dropped because the buffer was full and shedding is on.",
                registry=registry,
            ),
            rejected_streams=Counter(
                "impala_actorpool_rejected_streams_total",
                "Client streams ended by the pool with an error status.",
                ["code", "reason"],
                registry=registry,
            ),
            backpressure_wait=Counter(
                "impala_actorpool_backpressure_wait_seconds_total",
                "Time replies were held because the rollout buffer was full.",
                registry=registry,
            ),
            policy_version=Gauge(
                "impala_actorpool_policy_version", "Version of the weights acting now.", registry=registry
            ),
            paused=Gauge("impala_actorpool_paused", "1 while the run is paused (replies held).", registry=registry),
            weight_updates=Counter(
                "impala_actorpool_weight_updates_total", "Weight versions swapped in.", registry=registry
            ),
            weight_bulk_fallbacks=Counter(
                "impala_actorpool_weight_bulk_fallbacks_total",
                "Weight versions taken as gRPC chunks after a bulk data-plane fetch failed, by reason.",
                ["reason"],
                registry=registry,
            ),
        )
