"""Every impala_* metric the alert rules and dashboards use is documented in docs/metrics.md (type,
unit, labels, meaning) and declared by a service's metrics module, whose exposition passes
`promtool check metrics`. A live check (scraping running services) can reuse ``used_metric_names()``."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from impala.core.redis_server import RedisServer
from tests.monitoring.promql import (
    METRICS_DOC,
    NEEDS_PROMTOOL,
    PROMTOOL,
    documented_metric_names,
    metric_names,
    metric_rows,
    registered_metric_names,
    used_metric_names,
)


def test_metric_names_maps_histogram_series_to_their_metric() -> None:
    expr = 'sum(rate(impala_learner_learn_seconds_bucket{a="b"}[5m])) / impala_weights_bytes + up'
    assert metric_names(expr) == {"impala_learner_learn_seconds", "impala_weights_bytes"}


def test_monitoring_uses_the_core_metrics() -> None:
    used = used_metric_names()
    assert {"impala_learner_steps_total", "impala_actorpool_connected_clients", "impala_buffer_depth_rollouts"} <= used
    assert len(used) >= 30


def test_every_used_metric_is_documented() -> None:
    missing = used_metric_names() - documented_metric_names()
    assert not missing, f"metrics used by dashboards/alerts but not in {METRICS_DOC.name}: {sorted(missing)}"


def test_documentation_rows_are_complete() -> None:
    """Each metric row has a type, a unit, labels (or a dash) and a meaning."""
    rows = metric_rows()
    listed = [line for line in METRICS_DOC.read_text().splitlines() if line.startswith("| `impala_")]
    assert len(rows) == len(listed), "a metric is documented twice"
    for name, cells in rows.items():
        assert len(cells) == 5 and all(cells), cells
        assert cells[1] in ("counter", "gauge", "histogram"), cells
        assert name.endswith("_total") == (cells[1] == "counter"), f"{name}: counters end in _total"


def service_registry(redis_url: str) -> CollectorRegistry:
    """One registry holding every service's metrics, declared by the services' own metrics modules
    (the buffer's read the stream of ``redis_url`` at collection)."""
    from impala.actorpool.metrics import PoolMetrics
    from impala.buffer.metrics import BufferMetrics
    from impala.control.metrics import ControlMetrics
    from impala.core.redis_keys import RunKeys
    from impala.learner.metrics import LearnerMetrics
    from impala.weights.metrics import WeightsMetrics

    registry = CollectorRegistry()
    for metrics in (PoolMetrics, WeightsMetrics, ControlMetrics):
        metrics.create(registry)
    LearnerMetrics.create(registry)
    BufferMetrics(redis_url, RunKeys("names"), 16, registry)
    return registry


def test_every_used_metric_is_declared_by_a_service(redis_server: RedisServer) -> None:
    missing = used_metric_names() - registered_metric_names(service_registry(redis_server.url))
    assert not missing, f"metrics used by dashboards/alerts that no service declares: {sorted(missing)}"


@pytest.mark.skipif(PROMTOOL is None, reason=NEEDS_PROMTOOL)
def test_promtool_check_metrics_is_clean_on_the_exposition(redis_server: RedisServer) -> None:
    """The text every /metrics endpoint serves (same registries, same exposition code) passes promtool's lint."""
    exposition = generate_latest(service_registry(redis_server.url)).decode()
    assert "# TYPE impala_learner_steps_total counter" in exposition
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
