"""PromQL and metric names used by the chart's alert rules and dashboards.

``used_metric_names()`` is the set of impala_* metrics the monitoring depends on; tests compare it with
docs/metrics.md and with ``registered_metric_names()`` of the services' registries.
``check_promql()`` parses expressions with promtool, the Prometheus parser itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "helm" / "impala" / "files" / "alerts.yaml"
DASHBOARDS = ROOT / "helm" / "impala" / "dashboards"
METRICS_DOC = ROOT / "docs" / "metrics.md"
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = "promtool not installed (make setup installs the Debian package prometheus)"

_METRIC = re.compile(r"\bimpala_[a-z0-9_]+\b")
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")  # series of a histogram named after its metric
# Grafana variables promtool cannot parse, replaced by values of the same kind.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "rl"}


def metric_names(text: str) -> set[str]:
    """impala_* metric names in a PromQL expression (histogram series mapped to their metric)."""
    names = set()
    for name in _METRIC.findall(text):
        for suffix in _SERIES_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _targets(panels: Iterable[dict[str, Any]]) -> Iterator[str]:
    for panel in panels:
        yield from (target["expr"] for target in panel.get("targets") or [] if target.get("expr"))


def dashboard_exprs() -> list[str]:
    """Every panel query of every committed dashboard (PromQL, with Grafana variables)."""
    return [expr for _, _, expr in dashboard_panels()]


def dashboard_panels() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, query) of every panel query of every committed dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            found += [(board["uid"], panel["title"], expr) for expr in _targets([panel])]
    return found


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel.get("targets"):
            yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows hold their panels


def dashboard_variable_queries() -> list[str]:
    """Template-variable queries (label_values(...): Grafana syntax, not PromQL)."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] == "query":
                queries.append(str(variable["query"]))
    return queries


def used_metric_names() -> set[str]:
    """Every impala_* metric the alert rules and the dashboards use."""
    names: set[str] = set()
    for text in [*rule_exprs(), *dashboard_exprs(), *dashboard_variable_queries()]:
        names |= metric_names(text)
    return names


def table_cells(line: str) -> list[str]:
    """Cells of a Markdown table row (escaped pipes stay inside their cell); [] for other lines."""
    if not line.startswith("|"):
        return []
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def metric_rows() -> dict[str, list[str]]:
    """Metric name -> cells of its row in docs/metrics.md (rows whose first cell is a metric name)."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = table_cells(line)
        if cells and (match := _METRIC.fullmatch(cells[0].strip("`"))):
            rows[match.group(0)] = cells
    return rows


def documented_metric_names() -> set[str]:
    return set(metric_rows())


def for_promtool(expr: str) -> str:
    for variable, value in _GRAFANA_VARS.items():
        expr = expr.replace(variable, value)
    return expr


def check_promql(exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` over the expressions as recording rules: the Prometheus parser's verdict."""
    assert PROMTOOL is not None, NEEDS_PROMTOOL
    rules = [{"record": f"check:expr_{i}", "expr": for_promtool(expr)} for i, expr in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}, handle)
        handle.flush()
        return subprocess.run([PROMTOOL, "check", "rules", handle.name], capture_output=True, text=True, check=False)


def registered_metric_names(registry: CollectorRegistry) -> set[str]:
    """impala_* names as exposed (counters with their _total) of every metric on a registry."""
    names = set()
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        if name.startswith("impala_"):
            names.add(name)
    return names
