"""The docs say what the code does: every default a doc quotes for a settings field equals the field's
default, and the specific numbers the docs and README state (client count, preset envs, Atari shape,
chart icon) are read from the code."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from typer.main import get_command

from impala.cli import app
from impala.core.presets import preset
from impala.local.plan import SERVICE_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CLASSES: list[type[BaseSettings]] = list(SERVICE_SETTINGS)
UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30, "chars": 1.0}
NUMBER = r"(?P<value>true|false|-?\d[\d_,]*(?:\.\d+)?(?:e-?\d+)?)(?: ?(?P<unit>ms|s|KiB|MiB|GiB|chars))?"
QUOTES = [
    # `field` (64) · `field` (default 5 s)
    re.compile(rf"`(?P<field>[a-z_]+)` \((?:default:? )?{NUMBER}\)"),
    # `field` now defaults to 1 ms
    re.compile(rf"`(?P<field>[a-z_]+)`[^.|]*? defaults? to {NUMBER}\b"),
    # | what | 16 MiB | `field` | ...
    re.compile(rf"^\| [^|]+ \| {NUMBER} \| `(?P<field>[a-z_]+)`", re.MULTILINE),
]


def defaults(field: str) -> list[Any]:
    found = []
    for cls in CLASSES:
        info = cls.model_fields.get(field)
        if info is not None and not isinstance(info.default, SecretStr):
            found.append(info.default)
    return found


def quoted() -> list[tuple[str, str, str, float]]:
    """(doc, field, text, value) of every default quoted for a settings field."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for pattern in QUOTES:
            for match in pattern.finditer(text):
                if not defaults(match["field"]):
                    continue
                raw = match["value"]
                value = {"true": 1.0, "false": 0.0}.get(raw)
                if value is None:
                    value = float(raw.replace(",", "").replace("_", "")) * UNITS[match["unit"] or ""]
                out.append((doc.relative_to(ROOT).as_posix(), match["field"], match[0], value))
    return out


def test_docs_quote_enough_defaults_for_this_check_to_mean_something() -> None:
    assert len(quoted()) >= 15, quoted()


@pytest.mark.parametrize(("doc", "field", "text", "value"), quoted(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_quoted_default_is_the_code_default(doc: str, field: str, text: str, value: float) -> None:
    actual = [float(d) for d in defaults(field) if isinstance(d, int | float)]
    assert any(math.isclose(value, a, rel_tol=1e-9) for a in actual), f"{doc}: {text!r}, code: {defaults(field)}"


def _number_word(word: str) -> int:
    return {"one": 1, "two": 2, "three": 3, "four": 4}.get(word) or int(word)


def test_readme_states_the_local_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    local = get_command(app).commands["local"]  # type: ignore[attr-defined]
    clients = next(p.default for p in local.params if p.name == "clients")
    stated = re.search(r"(\w+) env-client process", readme)
    assert stated and _number_word(stated[1]) == clients, stated
    envs = re.search(r"the preset's (\d+) envs", readme)
    chosen = preset("CartPole-v1")
    assert envs and int(envs[1]) == (chosen.local_envs or chosen.num_envs)


def test_adr_0007_states_the_cartpole_preset_envs() -> None:
    text = (ROOT / "docs/adr/0007-local-stack.md").read_text()
    stated = re.search(r"`Preset.num_envs`, (\d+) for CartPole-v1", text)
    assert stated and int(stated[1]) == preset("CartPole-v1").num_envs


def test_protocol_states_the_atari_observation_shape() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    shapes = set(re.findall(r"`uint8 \[([\d, ]+)\]`", text))
    assert shapes == {"4, 84, 84"}, shapes
    if importlib.util.find_spec("ale_py") is None:
        pytest.skip("ale_py (extra atari) is not installed: the shape is checked against the docstring only")
    from impala.core.models import spec_for_env

    assert spec_for_env("ALE/Pong-v5").observation_shape == (4, 84, 84)


def test_architecture_says_where_batches_are_collated() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    assert "collates them time-major `[T, B]` in a child" in text  # ADR 0011; not a thread any more


def test_chart_icon_is_a_file_of_this_repository() -> None:
    chart = yaml.safe_load((ROOT / "helm/impala/Chart.yaml").read_text())
    path = re.sub(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/", "", chart["icon"])
    assert (ROOT / path).is_file(), chart["icon"]
