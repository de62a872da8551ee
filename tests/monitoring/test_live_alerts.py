"""The chart's alert rules and dashboards in a real Prometheus (the Debian binary) scraping a real
``impala local --prometheus``: a healthy run raises no alert, not even pending, and every dashboard
query returns data; a frozen learner (SIGSTOP) and a killed pool make their absence alerts go pending.

The rules are the chart's, unchanged (scoped to the run's namespace as the chart scopes them); no
``for:`` is shortened: "pending" is the state a rule enters at its first true evaluation, so the
faults need only the rules' own one-minute look-back. Scrapes and evaluations run every second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from impala.local.prometheus import prometheus_problem
from tests.monitoring.live import Prometheus, alert_states, evaluate_dashboards, grafana
from tests.monitoring.promql import rule_exprs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(prometheus_problem() is not None, reason=str(prometheus_problem()))]

HEALTHY_S = 120.0  # the healthy phase, counted from the moment the rules are loaded
FAULT_TIMEOUT_S = 150.0  # the absence rules look back 1 minute; a frozen scrape times out after 1 s
EVENT_COUNTERS = (
    "impala_actorpool_rejected_streams_total",
    "impala_weights_rejected_total",
    "impala_weights_bulk_refused_total",
    "impala_actorpool_weight_bulk_fallbacks_total",
    "impala_control_commands_total",
    "impala_learner_rollouts_dropped_total",
    "impala_actorpool_rollouts_shed_total",
)


@dataclass
class LiveRun:
    process: subprocess.Popen[bytes]
    run_dir: Path
    prom: Prometheus
    namespace: str
    armed_at: float

    def endpoints(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.run_dir / "endpoints.json").read_text())
        return doc

    def pid(self, name: str) -> int:
        return int(self.endpoints()["pids"][name])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, poll_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if value := check():
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    run_dir = tmp_path_factory.mktemp("live") / "run"
    argv = [sys.executable, "-m", "impala", "local", "--prometheus", "--prometheus-interval", "1", "--no-target"]
    argv += ["--max-seconds", "900", "--no-live", "--run-dir", str(run_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    log = (run_dir.parent / "local.out").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def prometheus_url() -> str | None:
            return json.loads((run_dir / "endpoints.json").read_text()).get("prometheus")  # type: ignore[no-any-return]

        url = wait_for("impala local writes endpoints.json", prometheus_url, 240)
        prom = Prometheus(url)
        wait_for("prometheus loads the rules", prom.rule_count, 60)
        yield LiveRun(process, run_dir, prom, json.loads((run_dir / "endpoints.json").read_text())["run"], time.time())
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError):  # never leave the learner stopped
            os.kill(json.loads((run_dir / "endpoints.json").read_text())["pids"]["learner"], signal.SIGCONT)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_endpoints_json_names_every_metrics_endpoint(live: LiveRun) -> None:
    metrics = live.endpoints()["metrics"]
    assert set(metrics) == {"learner", "weights", "control", "actorpool-0"}
    assert all(url.startswith("http://127.0.0.1:") and url.endswith("/metrics") for url in metrics.values())
    up = {r["metric"]["pod"]: r["value"][1] for r in wait_for("first scrapes", lambda: live.prom.query("up"), 30)}
    assert up == dict.fromkeys(metrics, "1"), "Prometheus scrapes every service (control with its token)"


def test_a_healthy_run_raises_no_alert_and_every_panel_has_data(live: LiveRun) -> None:
    time.sleep(max(0.0, live.armed_at + HEALTHY_S - time.time()))
    window = f"{int(time.time() - live.armed_at) + 5}s"
    # ALERTS holds a sample for every evaluation where an alert was pending or firing.
    raised = live.prom.query(f"count by (alertname, alertstate) (count_over_time(ALERTS[{window}]))")
    assert raised == [], f"alerts in a healthy run: {[r['metric'] for r in raised]}"
    rules = [rule for group in live.prom.get("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert len(rules) == len(rule_exprs())
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]

    panels = evaluate_dashboards(live.prom, live.namespace)
    empty = [(p.board, p.panel, p.expr) for p in panels if not p.values]
    assert not empty, f"panels with No data: {empty}"
    for counter in EVENT_COUNTERS:  # nothing happened: each panel shows 0
        shown = [p for p in panels if counter in p.expr]
        assert shown, f"no panel shows {counter}"
        assert all(v == 0 for p in shown for v in p.values), [(p.panel, p.values) for p in shown]
    restarts = [p for p in panels if p.panel == "Restarts (1h)"]
    assert restarts and all(v == 0 for p in restarts for v in p.values)
    scrapes = live.prom.query(grafana('sum(impala_control_requests_total{route="/metrics"})', live.namespace))
    assert float(scrapes[0]["value"][1]) > 10, "Prometheus scraped the control API, and its panel leaves that out"


def pending(live: LiveRun, *keys: str) -> dict[str, str] | None:
    states = alert_states(live.prom)
    return states if all(states.get(key) in ("pending", "firing") for key in keys) else None


def test_a_frozen_learner_and_a_killed_pool_raise_their_absence_alerts(live: LiveRun) -> None:
    """Both faults at once (one minute of look-back for both): each raises its own component's alerts."""
    if time.time() < live.armed_at + HEALTHY_S:
        pytest.skip("runs after the healthy phase (module order)")
    wanted = (
        "ImpalaLearnerAbsent",
        "ImpalaTargetDown{learner}",
        "ImpalaActorPoolsAbsent",
        "ImpalaTargetDown{actorpool}",
    )
    os.kill(live.pid("learner"), signal.SIGSTOP)
    try:

        def kill_pool_until_alerted() -> dict[str, str] | None:
            # impala local restarts a dead pool (after 0.5 s, 1 s, 2 s, ...): keep killing it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.pid("actorpool-0"), signal.SIGKILL)
            return pending(live, *wanted)

        states = wait_for(f"{wanted} pending", kill_pool_until_alerted, FAULT_TIMEOUT_S)
    finally:
        os.kill(live.pid("learner"), signal.SIGCONT)
    assert not {"ImpalaTargetDown{weights}", "ImpalaTargetDown{control}"} & set(states), states
