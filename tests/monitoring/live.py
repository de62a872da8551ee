"""Reading a real Prometheus: instant queries, alert states, and every dashboard expression evaluated
as Grafana would send it (``$namespace`` = the run, ``$__rate_interval`` = a window the run covers).

``python -m tests.monitoring.live URL NAMESPACE`` prints the table of the closing note (each dashboard
expression: series count and values; each alert: its state) for a running ``impala local --prometheus``.
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.monitoring.promql import dashboard_panels

RATE_WINDOW = "1m"


@dataclass(frozen=True)
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts now."""
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return alerts

    def rule_count(self) -> int:
        return sum(len(group["rules"]) for group in self.get("/api/v1/rules")["groups"])


def grafana(expr: str, namespace: str) -> str:
    """The query Grafana sends for a panel expression of the chosen namespace."""
    return expr.replace("$namespace", namespace).replace("$__rate_interval", RATE_WINDOW)


@dataclass(frozen=True)
class PanelResult:
    board: str
    panel: str
    expr: str
    values: tuple[float, ...]  # one per series; empty = "No data"

    @property
    def summary(self) -> str:
        if not self.values:
            return "No data"
        shown = ", ".join("NaN" if math.isnan(v) else f"{v:.3g}" for v in self.values[:4])
        return f"{len(self.values)} series: {shown}{' …' if len(self.values) > 4 else ''}"


def evaluate_dashboards(prom: Prometheus, namespace: str) -> list[PanelResult]:
    results = []
    for board, panel, expr in dashboard_panels():
        series = prom.query(grafana(expr, namespace))
        results.append(PanelResult(board, panel, expr, tuple(float(s["value"][1]) for s in series)))
    return results


def alert_states(prom: Prometheus) -> dict[str, str]:
    """alertname{labels that tell instances apart} -> pending | firing."""
    states = {}
    for alert in prom.alerts():
        labels = alert["labels"]
        key = labels["alertname"] + (f"{{{labels['component']}}}" if "component" in labels else "")
        states[key] = alert["state"]
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("namespace")
    args = parser.parse_args()
    prom = Prometheus(args.url)
    for result in evaluate_dashboards(prom, args.namespace):
        print(f"| {result.board} | {result.panel} | `{result.expr}` | {result.summary} |")
    print("alerts:", alert_states(prom) or "none pending or firing")


if __name__ == "__main__":
    main()
