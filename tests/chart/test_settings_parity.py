"""Helm values <-> settings parity, and the one resolver on the cluster.

Every settings field of a service is a key of its `config` block (typed in the schema), a run-wide
`shared` key, or owned by the chart for a reason written down in scripts/chart_schema.py. values.yaml
sets none of the learning fields: the rendered environment of each pod, fed to the real settings class
and to the same resolver the services call (``with_presets``), gives the effective config that
`impala local` uses for that env (``LearnConfig.for_env``), for the default values and every values file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.core.learn import LearnConfig
from impala.core.settings import with_presets
from impala.learner.config import learn_config
from impala.learner.settings import LearnerSettings
from tests.chart.render import CHART, VALUES_FILES, container, import_script, load_values, merge, name_of, one, render

SCHEMA = import_script("chart_schema")
SETTINGS: dict[str, type[BaseSettings]] = SCHEMA.COMPONENTS
CHART_OWNED: dict[str, dict[str, str]] = SCHEMA.CHART_OWNED
SHARED: dict[str, frozenset[str]] = SCHEMA.SHARED
WORKLOAD_KIND = {"actorpool": "Deployment", "learner": "StatefulSet", "weights": "Deployment", "control": "Deployment"}
VALUES = load_values(CHART / "values.yaml")
LEARNING = {f.name for f in fields(LearnConfig)}


@pytest.mark.parametrize("component", SETTINGS)
def test_every_settings_field_is_a_config_key_or_owned_by_the_chart(component: str) -> None:
    fields_ = set(SETTINGS[component].model_fields)
    owned, shared = set(CHART_OWNED[component]), SHARED[component]
    config = set(
        json.loads((CHART / "values.schema.json").read_text())["properties"][component]["properties"]["config"][
            "properties"
        ]
    )
    assert not owned - fields_, f"stale CHART_OWNED entries for {component}: {sorted(owned - fields_)}"
    assert not shared - fields_, f"shared keys {component} lacks: {sorted(shared - fields_)}"
    assert config == fields_ - owned - shared, "values.schema.json is stale: run scripts/chart_schema.py"
    assert not (owned & shared)
    assert all(reason.strip() for reason in CHART_OWNED[component].values())


@pytest.mark.parametrize("component", SETTINGS)
def test_values_yaml_renders_no_setting_the_user_did_not_set(component: str) -> None:
    """Defaults and presets stay with the services: values.yaml sets no config key, and no learning
    field of `shared` (the run's name and env are the only run-wide values it sets)."""
    assert VALUES[component]["config"] == {}
    set_shared = {key for key, value in VALUES["shared"].items() if value not in (None, "")}
    assert set_shared == {"env"}
    data = one(render(), "ConfigMap", name_of(component))["data"]
    learning = {f"IMPALA_{name.upper()}" for name in LEARNING | SHARED["actorpool"]} - {"IMPALA_RUN", "IMPALA_ENV"}
    assert not learning & set(data), sorted(learning & set(data))


def test_shared_block_holds_exactly_the_shared_fields() -> None:
    assert set(VALUES["shared"]) == set().union(*SHARED.values())


def rendered_env(objects: list[dict[str, Any]], component: str) -> tuple[dict[str, str], set[str]]:
    """(plain IMPALA_* values from the ConfigMap and env, names set from Secrets) of a component's pod."""
    plain = dict(one(objects, "ConfigMap", name_of(component))["data"])
    from_secrets = set()
    for entry in container(one(objects, WORKLOAD_KIND[component], name_of(component))).get("env", []):
        if "value" in entry:
            plain[entry["name"]] = entry["value"]
        else:
            from_secrets.add(entry["name"])
    return plain, from_secrets


def pod_environ(objects: list[dict[str, Any]], component: str, tmp_path: Path) -> dict[str, str]:
    """The IMPALA_* environment of a component's pod, files and Secrets replaced by stand-ins."""
    plain, from_secrets = rendered_env(objects, component)
    token = tmp_path / "token"
    token.write_text("t")
    environ = {name: value for name, value in plain.items() if name != "IMPALA_ENV_SPEC"}
    for name in environ:
        if name.endswith(("_TOKEN_FILE", "_TLS_CERT", "_TLS_KEY")):
            environ[name] = str(token)
    environ.update({name: "redis://redis:6379/0" for name in from_secrets})
    return environ


def settings_from(component: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    for name in [n for n in os.environ if n.startswith("IMPALA_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return SETTINGS[component]()


@pytest.mark.parametrize("component", SETTINGS)
def test_rendered_environment_is_accepted_by_the_service(
    component: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    overrides = {
        "learner": {"batch_size": 16},
        "actorpool": {"max_connection_age_s": 60.0},
        "weights": {"chunk_bytes": 1048576},
        "control": {"pool_timeout_s": 5.0},
    }
    values = {component: {"config": overrides[component]}}
    environ = pod_environ(render(values), component, tmp_path)
    fields_ = SETTINGS[component].model_fields
    for name in environ:
        assert name.startswith("IMPALA_") and name.removeprefix("IMPALA_").lower() in fields_, name
    settings = settings_from(component, environ, monkeypatch)
    for key, value in overrides[component].items():
        assert getattr(settings, key) == value, f"{component}.config.{key} reads back as {getattr(settings, key)!r}"
    assert settings.model_dump()["run"] == "demo"  # shared.run "" = the release name


CASES = [
    pytest.param({}, id="default"),
    *(pytest.param(load_values(path), id=path.name) for path in VALUES_FILES),
    pytest.param({"shared": {"env": "Acrobot-v1"}}, id="env-without-preset"),
    pytest.param({"learner": {"config": {"entropy_cost": 0.02}}, "shared": {"unroll_length": 20}}, id="overrides"),
]


@pytest.mark.parametrize("values", CASES)
def test_cluster_trains_an_env_as_impala_local_does(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The learner and the pools the chart renders resolve, through the services' own resolver, to the
    config `impala local` and the in-process trainer use for the env (``LearnConfig.for_env``) plus the
    user's overrides, and agree with each other on T and the model."""
    objects = render(values)
    merged = merge(VALUES, values)
    env = merged["shared"]["env"]
    given = {
        k: v for k, v in {**merged["learner"]["config"], **merged["shared"]}.items() if k in LEARNING and v is not None
    }
    expected = LearnConfig.for_env(env, given)
    learner_environ = pod_environ(objects, "learner", tmp_path)
    learner = settings_from("learner", learner_environ, monkeypatch)
    assert isinstance(learner, LearnerSettings)
    assert asdict(learn_config(learner, learner_environ)) == asdict(expected)
    pool_environ = pod_environ(objects, "actorpool", tmp_path)
    pool = with_presets(settings_from("actorpool", pool_environ, monkeypatch), pool_environ)
    resolved_learner = with_presets(learner, learner_environ)
    assert isinstance(pool, ActorPoolSettings)
    assert pool.unroll_length == expected.unroll_length
    for key in ("env", "model", "hidden_size", "use_lstm"):
        assert getattr(pool, key) == getattr(resolved_learner, key), key
