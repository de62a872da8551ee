"""ServiceMonitor and PrometheusRule are CRDs kubernetes-validate has no schema for: check their
structure here, and that each ServiceMonitor finds a Service with the port it scrapes."""

from __future__ import annotations

from typing import Any

from tests.chart.render import TOKENS, Manifest, find, merge, name_of, render

MONITORING = merge(TOKENS, {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})


def services_selected(objects: list[Manifest], selector: dict[str, str]) -> list[Manifest]:
    return [s for s in find(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]


def test_one_service_monitor_per_component_scrapes_a_real_port() -> None:
    objects = render(MONITORING)
    monitors = {m["metadata"]["name"]: m for m in find(objects, "ServiceMonitor")}
    assert set(monitors) == {name_of(c) for c in ("actorpool", "learner", "weights", "control")}
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        spec = monitor["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
        assert spec["namespaceSelector"] == {"matchNames": ["rl"]}
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"].endswith("s")
        ports = {
            p["name"]
            for service in services_selected(objects, spec["selector"]["matchLabels"])
            for p in service["spec"]["ports"]
        }
        assert endpoint["port"] in ports, f"{name}: no selected Service has port {endpoint['port']}"


def test_control_metrics_are_scraped_with_the_control_token() -> None:
    monitor = next(find(render(MONITORING), "ServiceMonitor", name_of("control")))
    endpoint: dict[str, Any] = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "demo-impala-auth", "key": "control-token"},
    }
    public = merge(MONITORING, {"control": {"config": {"metrics_public": True}}})
    assert (
        "authorization" not in next(find(render(public), "ServiceMonitor", name_of("control")))["spec"]["endpoints"][0]
    )


def test_prometheus_rule_structure() -> None:
    objects = render(merge(TOKENS, {"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}))
    (rule,) = find(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for alert in group["rules"]:
            assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert
            assert isinstance(alert["expr"], str) and isinstance(alert["for"], str)


def test_monitoring_crds_are_off_by_default() -> None:
    objects = render(TOKENS)
    assert not list(find(objects, "ServiceMonitor")) and not list(find(objects, "PrometheusRule"))
