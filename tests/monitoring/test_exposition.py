"""What each service exposes before anything happens: process metrics, no ``*_created``, every known
label value of a counter at 0, no checkpoint timestamp before the first checkpoint, and a buffer depth
read from Redis itself (real redis-server)."""

from __future__ import annotations

import re
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from impala.actorpool.metrics import BULK_FALLBACK_REASONS, REJECTIONS, PoolMetrics
from impala.buffer.metrics import BufferMetrics
from impala.control.metrics import COMMANDS
from impala.core.metrics import LatestValue, service_registry
from impala.core.redis_keys import LEARNER_GROUP, RunKeys
from impala.core.redis_server import RedisServer
from impala.learner.metrics import LearnerMetrics
from impala.weights.metrics import BULK_REFUSED_REASONS, REJECTED_REASONS, WeightsMetrics

ACTORPOOL = Path(__file__).resolve().parents[2] / "services" / "impala" / "actorpool"


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_service_registry_has_process_metrics_and_no_created_series() -> None:
    registry = service_registry()
    PoolMetrics.create(registry)
    names = {name for name, _ in samples(registry)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert {"process_start_time_seconds", "process_max_fds", "python_info"} <= names
    assert not [name for name in names if name.endswith("_created")]


def test_counters_with_known_labels_start_at_zero_for_every_value() -> None:
    registry = CollectorRegistry()
    PoolMetrics.create(registry)
    WeightsMetrics.create(registry)
    LearnerMetrics.create(registry)
    got = samples(registry)

    def zero(name: str, **labels: str) -> bool:
        return got.get((name, tuple(sorted(labels.items())))) == 0.0

    assert all(zero("impala_actorpool_rejected_streams_total", code=c, reason=r) for c, r in REJECTIONS)
    assert all(zero("impala_actorpool_weight_bulk_fallbacks_total", reason=r) for r in BULK_FALLBACK_REASONS)
    assert all(zero("impala_actorpool_rollouts_produced_total", partial=p) for p in ("true", "false"))
    assert all(zero("impala_weights_rejected_total", reason=r) for r in REJECTED_REASONS)
    assert all(zero("impala_weights_bulk_refused_total", reason=r) for r in BULK_REFUSED_REASONS)
    assert all(zero("impala_learner_rollouts_dropped_total", reason=r) for r in ("stale", "corrupt"))
    assert set(COMMANDS) == {"pause", "resume", "checkpoint", "scale"}


def test_rejections_list_every_reason_the_pool_raises() -> None:
    """Every literal (code, reason) the pool's sources raise is exported from the start."""
    known = set(REJECTIONS)
    source = "\n".join(path.read_text() for path in ACTORPOOL.glob("*.py"))
    raised = {("INVALID_ARGUMENT", r) for r in re.findall(r'\binvalid\(\s*"(\w+)"', source)}
    raised |= {("FAILED_PRECONDITION", r) for r in re.findall(r'\bprecondition\(\s*"(\w+)"', source)}
    raised |= set(re.findall(r'StreamError\(\s*grpc\.StatusCode\.(\w+),\s*"(\w+)"', source))
    assert len(raised) > 10
    assert raised <= known, f"not exported at 0: {sorted(raised - known)}"
    # Names passed as variables: the per-env arrays and the tensors of a Step.
    assert {("INVALID_ARGUMENT", r) for r in ("terminated", "truncated", "observation", "final_observation")} <= known


def test_checkpoint_timestamp_is_absent_until_set_and_heartbeat_starts_at_start() -> None:
    registry = CollectorRegistry()
    metrics = LearnerMetrics.create(registry)
    assert ("impala_learner_last_checkpoint_timestamp_seconds", ()) not in samples(registry)
    assert "# TYPE impala_learner_last_checkpoint_timestamp_seconds gauge" in generate_latest(registry).decode()
    assert samples(registry)[("impala_learner_heartbeat_timestamp_seconds", ())] > 1.7e9
    metrics.last_checkpoint.set(1234.5)
    assert samples(registry)[("impala_learner_last_checkpoint_timestamp_seconds", ())] == 1234.5
    assert isinstance(metrics.last_checkpoint, LatestValue)


def test_buffer_depth_and_unread_are_read_from_redis_at_each_scrape(redis_server: RedisServer) -> None:
    keys = RunKeys("depth")
    registry = CollectorRegistry()
    buffer = BufferMetrics(redis_server.url, keys, 16, registry)
    client = redis.Redis.from_url(redis_server.url)
    try:
        got = samples(registry)
        assert got[("impala_buffer_depth_rollouts", ())] == 0 and got[("impala_buffer_capacity_rollouts", ())] == 16
        for _ in range(5):
            client.xadd(keys.rollouts, {"r": b"x"})
        assert samples(registry)[("impala_buffer_unread_rollouts", ())] == 5  # before the group exists
        client.xgroup_create(keys.rollouts, LEARNER_GROUP, id="0")
        client.xreadgroup(LEARNER_GROUP, "learner-0", {keys.rollouts: ">"}, count=2)
        got = samples(registry)
        assert (got[("impala_buffer_depth_rollouts", ())], got[("impala_buffer_unread_rollouts", ())]) == (5, 3)
        redis_server.stop()
        got = samples(registry)  # Redis gone: no number rather than a stale one
        assert ("impala_buffer_depth_rollouts", ()) not in got and got[("impala_buffer_capacity_rollouts", ())] == 16
    finally:
        client.close()
        buffer.close()
