"""The committed dashboards are what scripts/dashboards.py generates, every query parses in promtool,
and the chart ships them as ConfigMaps the Grafana sidecar picks up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.render import TOKENS, find, import_script, merge, render
from tests.monitoring.promql import DASHBOARDS, NEEDS_PROMTOOL, PROMTOOL, check_promql, dashboard_exprs

NAMES = ("overview", "actorpool", "learner")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return data


def test_committed_dashboards_are_up_to_date() -> None:
    generated = import_script("dashboards").render_all()
    assert sorted(generated) == sorted(f"{name}.json" for name in NAMES)
    for file_name, text in generated.items():
        committed = (DASHBOARDS / file_name).read_text()
        assert committed == text, f"{file_name} is stale: run `python scripts/dashboards.py` and commit"


@pytest.mark.skipif(PROMTOOL is None, reason=NEEDS_PROMTOOL)
def test_every_dashboard_query_parses() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    result = check_promql(exprs)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_structure(name: str) -> None:
    board = load(name)
    assert board["uid"] == f"impala-{name}" and board["title"].startswith("impala / ")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["options"] is not None, panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], (panel["title"], target["expr"])
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, panel["title"]


def test_chart_ships_each_dashboard_as_a_labelled_configmap() -> None:
    values = merge(TOKENS, {"monitoring": {"dashboards": {"folder": "rl"}}})
    maps = {
        cm["metadata"]["name"]: cm for cm in find(render(values), "ConfigMap") if "dashboard" in cm["metadata"]["name"]
    }
    assert set(maps) == {f"demo-impala-dashboard-{name}" for name in NAMES}
    for name in NAMES:
        cm = maps[f"demo-impala-dashboard-{name}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "rl"
        assert json.loads(cm["data"][f"impala-{name}.json"]) == load(name)
    off = merge(TOKENS, {"monitoring": {"dashboards": {"enabled": False}}})
    assert not [cm for cm in find(render(off), "ConfigMap") if "dashboard" in cm["metadata"]["name"]]


def test_notes_name_the_dashboards() -> None:
    from tests.chart.render import render_templates

    notes = render_templates(TOKENS)["impala/templates/NOTES.txt"]
    for name in NAMES:
        assert load(name)["title"] in notes
