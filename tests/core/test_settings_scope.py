"""Each setting is declared once, with its scope; every list of fields by role derives from the scopes."""

from __future__ import annotations

import ast
import collections
import importlib.util
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.core.settings import fields_in_scope, scope_of
from impala.learner.settings import LearnerSettings
from impala.local import config_file, plan
from impala.local.plan import SERVICE_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
CLASSES: list[type[BaseSettings]] = list(SERVICE_SETTINGS)


def _chart_schema() -> object:
    spec = importlib.util.spec_from_file_location("chart_schema", ROOT / "scripts" / "chart_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declarations() -> dict[str, list[str]]:
    """Field name -> the settings classes (in services/) whose body declares it."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for path in (ROOT / "services" / "impala").rglob("settings.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = [
                    i.target.id for i in node.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
                ]
                for name in names:
                    if not name.startswith("_") and name != "model_config":
                        found[name].append(node.name)
    return found


@pytest.mark.parametrize("settings", CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_known_scope(settings: type[BaseSettings]) -> None:
    for name in settings.model_fields:
        assert scope_of(settings, name) in ("run", "wire", "deployment", "tuning")


def test_a_field_shared_by_services_has_one_scope_everywhere() -> None:
    scopes: dict[str, set[str]] = collections.defaultdict(set)
    for settings in CLASSES:
        for name in settings.model_fields:
            scopes[name].add(scope_of(settings, name))
    assert {name: s for name, s in scopes.items() if len(s) > 1} == {}


def test_run_wide_and_wire_fields_are_declared_once() -> None:
    """What pools and learner must agree on lives in one class both inherit, not in a copy per service."""
    shared = fields_in_scope(ActorPoolSettings, LearnerSettings, scopes=("run", "wire"))
    lineage = {cls.__name__ for settings in (ActorPoolSettings, LearnerSettings) for cls in settings.__mro__}
    declared = {name: [c for c in classes if c in lineage] for name, classes in _declarations().items()}
    assert {name: declared[name] for name in shared if len(declared[name]) != 1} == {}
    assert "unroll_length" in shared


def test_the_chart_and_impala_local_derive_their_field_lists_from_the_scopes() -> None:
    schema = _chart_schema()
    for component, settings in schema.COMPONENTS.items():  # type: ignore[attr-defined]
        assert set(schema.CHART_OWNED[component]) == fields_in_scope(settings, scopes=("deployment",))  # type: ignore[attr-defined]
        assert schema.SHARED[component] == fields_in_scope(settings, scopes=("run", "wire"))  # type: ignore[attr-defined]
    deployment = fields_in_scope(*CLASSES, scopes=("deployment",))
    assert deployment <= plan.SESSION_FIELDS
    flags = set(config_file.hyperparameter_fields())
    assert not flags & deployment, "impala local offers no deployment wiring as a flag"
    assert {"unroll_length", "model", "hidden_size", "use_lstm", "learning_rate", "max_batch_size"} <= flags
