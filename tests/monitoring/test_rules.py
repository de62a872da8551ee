"""The alert rules load in promtool, every alert has unit tests that fire it and keep it quiet, and the
PrometheusRule the chart renders carries the same rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from impala.local.prometheus import scope_rules
from tests.chart.render import NAMESPACE, TOKENS, merge, one, render
from tests.monitoring.promql import ALERTS, NEEDS_PROMTOOL, PROMTOOL, ROOT, check_promql

UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NEEDS_PROMTOOL)
REQUIRED = {"ImpalaLearnerStalled", "ImpalaBufferSaturated", "ImpalaPolicyLagHigh", "ImpalaNoEnvClients"}
REQUIRED |= {"ImpalaCheckpointTooOld", "ImpalaNoCheckpointYet", "ImpalaTargetDown", "ImpalaLearnerAbsent"}
REQUIRED |= {"ImpalaActorPoolsAbsent"}


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, cwd=UNIT_TESTS.parent)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    """The unit tests, on the rules as the chart renders them for a release in namespace "rl"."""
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(scope_rules(ALERTS.read_text(), "rl")))
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = ["alerts.yaml"]
    (tmp_path / UNIT_TESTS.name).write_text(yaml.safe_dump(tests))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", UNIT_TESTS.name], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_reports_a_broken_expression() -> None:
    """The parse check can fail."""
    result = check_promql(["sum by (namespace) (rate(impala_learner_steps_total[5m])"])
    assert result.returncode != 0 and "parse error" in (result.stdout + result.stderr)


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    names = {rule["alert"] for rule in rules()}
    assert names >= REQUIRED
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for name in names:
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"no unit test where {name} fires"
        assert False in outcomes, f"no unit test where {name} stays quiet"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_summary_and_a_runbook_that_exists() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {slug(line.lstrip("#")) for line in operations.splitlines() if line.startswith("#")}
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no heading for #{anchor}"


def test_prometheus_rule_carries_the_file_minus_disabled_plus_labels() -> None:
    values = merge(
        TOKENS,
        {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "ruleLabels": {"team": "rl"},
                    "disabled": {"ImpalaNoEnvClients": True},
                }
            }
        },
    )
    rendered = one(render(values), "PrometheusRule", "demo-impala")
    assert rendered["apiVersion"] == "monitoring.coreos.com/v1"
    got = {rule["alert"]: rule for group in rendered["spec"]["groups"] for rule in group["rules"]}
    # absent() selectors scoped to the release namespace, exactly as `impala local --prometheus` scopes them.
    scoped = scope_rules(ALERTS.read_text(), NAMESPACE)
    expected = {
        rule["alert"]: rule for g in scoped["groups"] for rule in g["rules"] if rule["alert"] != "ImpalaNoEnvClients"
    }
    assert set(got) == set(expected)
    assert (
        f'absent_over_time(impala_learner_steps_total{{namespace="{NAMESPACE}",}}[1m])'
        in got["ImpalaLearnerAbsent"]["expr"]
    )
    for name, rule in expected.items():
        assert got[name]["expr"] == rule["expr"] and got[name]["for"] == rule["for"]
        assert got[name]["labels"] == {**rule["labels"], "team": "rl"}
        assert got[name]["annotations"] == rule["annotations"]


@needs_promtool
def test_rendered_prometheus_rule_loads_in_promtool(tmp_path: Path) -> None:
    values = merge(TOKENS, {"monitoring": {"prometheusRule": {"enabled": True}}})
    spec = one(render(values), "PrometheusRule", "demo-impala")["spec"]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
