"""Render the Helm chart offline with the real Helm SDK (helm-python-sdk) and parse the manifests."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "impala"
RELEASE = "demo"
NAMESPACE = "rl"
# Default-deny means the chart needs tokens to render; tests that are not about auth pass these.
TOKENS: dict[str, Any] = {"auth": {"actorpool": {"token": "pool-secret"}, "control": {"token": "control-secret"}}}
# Values files a user can install with: every one must render and validate.
VALUES_FILES = sorted([*(ROOT / "deploy").glob("values-*.yaml"), *(CHART / "ci").glob("*.yaml")])

Manifest = dict[str, Any]


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files: maps merge recursively, anything else replaces. A None stays in the
    result, so Helm's own coalescing with the chart defaults deletes that default key."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


@cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def render_templates(*layers: Mapping[str, Any], name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text for the merged value layers (later layers win)."""
    values: dict[str, Any] = {}
    for layer in layers:
        values = merge(values, layer)
    result: dict[str, str] = _chart().render(values, name=name, namespace=namespace)
    return result


def parse(templates: Mapping[str, str]) -> list[Manifest]:
    """Every Kubernetes object of rendered templates (NOTES.txt excluded), in template order."""
    objects: list[Manifest] = []
    for path, text in sorted(templates.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render(*layers: Mapping[str, Any]) -> list[Manifest]:
    """Every Kubernetes object the chart renders (NOTES.txt excluded), in template order."""
    return parse(render_templates(*layers))


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Iterator[Manifest]:
    for obj in objects:
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name):
            yield obj


def one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = list(find(objects, kind, name))
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def name_of(component: str) -> str:
    return f"{RELEASE}-impala-{component}"


def pod_spec(obj: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(obj: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(obj)["containers"]
    assert len(containers) == 1
    return containers[0]


def import_script(name: str) -> ModuleType:
    """Import scripts/<name>.py (the generators are scripts, not package modules)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module
