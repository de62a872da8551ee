"""Every impala_* metric the alert rules and dashboards use is documented in docs/metrics.md (type,
unit, labels, meaning). Checks against the services' code and a live `promtool check metrics` can use
the same ``used_metric_names()``."""

from __future__ import annotations

from tests.monitoring.promql import METRICS_DOC, documented_metric_names, metric_names, metric_rows, used_metric_names


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
