"""Write helm/impala/README.md from the `## @section` and `## @param` comments of values.yaml.

One table per section: parameter, description, default (as values.yaml sets it). A `@param` comment
may continue on the `##` lines below it. ``--check`` exits 1 when the committed README is stale
(tests/chart runs it), as scripts/chart_schema.py does for the schema.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "impala"
README = CHART / "README.md"
HEADER = """# impala Helm chart

Generated from the `@param` comments of values.yaml by `scripts/chart_readme.py` (`make chart-docs`);
do not edit. Install and operate it with [docs/operations.md](../../docs/operations.md); the chart's
decisions are ADRs 0004 and 0024. `config` blocks take the settings fields of their service (typed in
values.schema.json); a field left out is resolved by the service (env preset, then default).

```bash
helm install impala ./helm/impala -n impala --create-namespace
```
"""


def params(text: str) -> list[tuple[str, str, str]]:
    """(section, name, description) of every `@param`, in file order."""
    out: list[tuple[str, str, str]] = []
    section = "General"
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.match(r"## @section (.+)", stripped):
            section, current = match.group(1), None
        elif match := re.match(r"## @param (\S+) ?(.*)", stripped):
            current = [match.group(2)]
            out.append((section, match.group(1), ""))
        elif stripped.startswith("##") and current is not None and out:
            current.append(stripped.removeprefix("##").strip())
        else:
            current = None
        if current is not None and out:
            out[-1] = (out[-1][0], out[-1][1], " ".join(part for part in current if part))
    return out


def default(values: dict[str, Any], name: str) -> str:
    node: Any = values
    for key in name.split("."):
        if not isinstance(node, dict) or key not in node:
            raise SystemExit(f"@param {name} names no key of values.yaml")
        node = node[key]
    return f"`{json.dumps(node)}`"


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = [HEADER]
    section = None
    for sect, name, description in params(text):
        if sect != section:
            section = sect
            lines += ["", f"## {sect}", "", "| Parameter | Description | Default |", "|---|---|---|"]
        cells = [f"`{name}`", description, default(values, name)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from generated import write_or_check  # scripts/ is on sys.path when this runs as a script

    return write_or_check(README, render, "Regenerate helm/impala/README.md from values.yaml.", argv)


if __name__ == "__main__":
    sys.exit(main())
