"""The chart's README is generated and current, and every `helm install` command of README.md,
docs/operations.md and deploy/ renders with Helm's own code exactly as written."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.chart.render import ROOT, import_script, load_values, merge, render
from tests.chart.test_render import validate_all

DOCS = [ROOT / "README.md", ROOT / "docs" / "operations.md", *sorted((ROOT / "deploy").glob("*.yaml"))]


def helm_commands() -> list[tuple[str, str]]:
    """(file name, command) of every `helm install|upgrade|template` line, continuation lines joined."""
    found = []
    for path in DOCS:
        text = re.sub(r"\\\n\s*#?\s*", " ", path.read_text())
        for line in text.splitlines():
            line = line.strip().removeprefix("#").strip()
            if re.match(r"helm (install|upgrade|template) ", line):
                found.append((path.name, line.split("  #")[0].split(" # ")[0].strip()))
    return found


def values_of(command: str) -> dict[str, Any]:
    """The values a helm command passes: -f files (relative to the repository root) then --set pairs."""
    words = shlex.split(command)
    assert words[3].endswith("helm/impala"), command
    values: dict[str, Any] = {}
    for flag, arg in itertools.pairwise(words):
        if flag in ("-f", "--values"):
            values = merge(values, load_values(ROOT / arg))
        elif flag == "--set":
            key, value = arg.split("=", 1)
            for part in reversed(key.split(".")):
                value = {part: value}  # type: ignore[assignment]
            values = merge(values, value)  # type: ignore[arg-type]
    return values


def test_docs_show_the_commands_a_user_types() -> None:
    commands = [command for _, command in helm_commands()]
    assert "helm install impala ./helm/impala -n impala --create-namespace -f deploy/values-dev.yaml" in commands
    assert any("--set image.registry=" in command for command in commands)


@pytest.mark.parametrize(("source", "command"), helm_commands(), ids=lambda c: c[:60] if " " in c else c)
def test_every_documented_helm_command_renders(source: str, command: str) -> None:
    if "..." in command or "<" in command:
        pytest.skip(f"{source}: a placeholder, not a command to copy")
    validate_all(render(values_of(command)))


def test_chart_readme_is_generated_from_values_yaml() -> None:
    generator = import_script("chart_readme")
    assert (Path(generator.README)).read_text() == generator.render(), "run `python scripts/chart_readme.py`"
    documented = {name for _, name, _ in generator.params((Path(generator.CHART) / "values.yaml").read_text())}
    assert {"auth.actorpool.token", "actorpool.tls.enabled", "learner.gpus", "image.registry"} <= documented
