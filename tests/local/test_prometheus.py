"""``impala local --prometheus``: the scrape configuration and rules it writes pass promtool, every
service is a target labelled as the chart's ServiceMonitors label it, and absence rules are scoped.
(The live run is tests/monitoring/test_live_alerts.py.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from impala.local.prometheus import ALERTS, LocalPrometheus, metrics_urls, prometheus_problem, scope_rules
from impala.local.stack import LocalOptions, OptionsError, resolve
from tests.local.test_plan import _plan

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def urls(tmp_path: Path) -> tuple[dict[str, str], Path]:
    plan = _plan(tmp_path)  # two pools, tokens in tmp_path
    found = metrics_urls(plan)
    assert found["learner"] == f"http://127.0.0.1:{plan.learner.metrics_port}/metrics"
    assert found["control"] == f"{plan.control_url}/metrics"
    return found, tmp_path / "control.token"


def test_every_service_has_a_metrics_url(tmp_path: Path) -> None:
    found, _ = urls(tmp_path)
    assert set(found) == {"learner", "weights", "control", "actorpool-0", "actorpool-1"}
    assert len(set(found.values())) == 5


@needs_promtool
def test_config_and_rules_pass_promtool_and_label_targets_like_the_chart(tmp_path: Path) -> None:
    found, token = urls(tmp_path)
    prom = LocalPrometheus(tmp_path / "prom", "r1", found, token, interval_s=2)
    prom.write_config(armed=True)
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "config", str(prom.config_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout + check.stderr
    config = yaml.safe_load(prom.config_file.read_text())
    assert config["global"] == {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"}
    labels = {t["labels"]["pod"]: t["labels"] for job in config["scrape_configs"] for t in job["static_configs"]}
    assert labels["actorpool-1"] == {"namespace": "r1", "pod": "actorpool-1", "component": "actorpool"}
    assert {label["component"] for label in labels.values()} == {"actorpool", "learner", "weights", "control"}
    control = next(job for job in config["scrape_configs"] if job["job_name"] == "control")
    assert control["authorization"]["credentials_file"] == str(token.resolve())
    assert "--web.enable-lifecycle" in prom.argv()


def test_rules_are_the_charts_with_absence_scoped_to_the_run() -> None:
    plain = yaml.safe_load(ALERTS.read_text())
    scoped = scope_rules(ALERTS.read_text(), "r1")
    pairs = [
        (a, b) for ga, gb in zip(plain["groups"], scoped["groups"], strict=True)
        for a, b in zip(ga["rules"], gb["rules"], strict=True)
    ]  # fmt: skip
    changed = {a["alert"] for a, b in pairs if a != b}
    assert changed == {"ImpalaLearnerAbsent", "ImpalaActorPoolsAbsent"}
    for _, rule in pairs:
        if rule["alert"] in changed:
            assert '{namespace="r1",}[1m]' in rule["expr"]


def test_unavailable_prometheus_is_a_clear_options_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    problem = prometheus_problem()
    assert problem is not None and "apt-get install prometheus" in problem
    with pytest.raises(OptionsError, match="needs the prometheus binary"):
        resolve(LocalOptions(prometheus=True, use_target=False))
