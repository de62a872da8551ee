"""Helm values <-> settings parity.

Every key of a component's `config` block (and of `shared`) is a field of that service's settings class,
and every settings field is either such a key or owned by the chart for a reason written down below.
The rendered environment of each pod is then fed to the real settings class, which must accept it and
read back the values.yaml defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.control.settings import ControlSettings
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings
from tests.chart.render import CHART, TOKENS, container, load_values, name_of, one, render

SETTINGS: dict[str, type[BaseSettings]] = {
    "actorpool": ActorPoolSettings,
    "learner": LearnerSettings,
    "weights": WeightsSettings,
    "control": ControlSettings,
}
WORKLOAD_KIND = {"actorpool": "Deployment", "learner": "StatefulSet", "weights": "Deployment", "control": "Deployment"}
MODEL = {"run", "env", "env_spec", "model", "hidden_size", "use_lstm", "unroll_length"}
# Fields set once in `shared`, so the pools and the learner cannot disagree.
SHARED = {"actorpool": MODEL, "learner": MODEL, "weights": {"run"}, "control": {"run"}}

_ADDRESS = "the chart binds all interfaces"
_PORT = "<component>.containerPort: Service, probes and NetworkPolicy must use the same port"
_METRICS = "the chart-wide metricsPort: Services, NetworkPolicies and ServiceMonitors must agree"
_REDIS = "the redis-url Secret, built from the redis block (password inside) or redis.external"
_TOKEN = "auth.<component>: a Secret mounted as a file (token_file); a token never sits in the pod spec"
_TOKEN_FILE = "the path of that mounted Secret"
_INSECURE = "auth.insecure, the chart-wide switch of the default-deny"
_WEIGHTS = "the in-cluster address of the chart's weight service"
# Settings fields the chart owns, with the reason. Anything else must be a `config` key.
CHART_OWNED: dict[str, dict[str, str]] = {
    "actorpool": {
        "host": _ADDRESS,
        "port": _PORT,
        "metrics_port": _METRICS,
        "redis_url": _REDIS,
        "token": _TOKEN,
        "token_file": _TOKEN_FILE,
        "insecure": _INSECURE,
        "tls_cert": "actorpool.tls: a kubernetes.io/tls Secret mounted as files",
        "tls_key": "actorpool.tls: a kubernetes.io/tls Secret mounted as files",
        "weights_address": _WEIGHTS,
        "weights_token": "auth.weights: read from its Secret",
        "weights_token_file": "unused: the weights token comes from its Secret as IMPALA_WEIGHTS_TOKEN",
        "checkpoint": "pools take their weights from the weight service; no checkpoint volume is mounted",
        "pool_id": "must differ per replica; the default (hostname-pid) is unique per pod",
    },
    "learner": {
        "metrics_port": _METRICS,
        "redis_url": _REDIS,
        "weights_address": _WEIGHTS,
        "weights_token": "auth.weights: read from its Secret",
        "weights_token_file": "unused: the weights token comes from its Secret as IMPALA_WEIGHTS_TOKEN",
        "checkpoint_dir": "the mount path of the checkpoint volume (PVC)",
        "consumer": "the default, the hostname, is the StatefulSet pod name: stable across restarts, so a "
        "restarted learner reclaims its own pending entries",
    },
    "weights": {
        "host": _ADDRESS,
        "port": _PORT,
        "metrics_port": _METRICS,
        "redis_url": _REDIS,
        "token": "auth.weights: read from its Secret",
        "token_file": "unused: the weights token comes from its Secret as IMPALA_TOKEN",
        "insecure": "set when auth.weights has no token (optional: the service is fenced by its NetworkPolicy)",
        "bulk_port": "weights.bulkContainerPort: container port, Service port and NetworkPolicy must agree, and "
        "subscribers dial the port the service announces",
        "tls_cert": "in-cluster only and fenced by a NetworkPolicy; use a service mesh for mTLS",
        "tls_key": "in-cluster only and fenced by a NetworkPolicy; use a service mesh for mTLS",
    },
    "control": {
        "host": _ADDRESS,
        "port": _PORT,
        "metrics_port": "the chart scrapes /metrics on the control API's HTTP port (with its token)",
        "redis_url": _REDIS,
        "token": _TOKEN,
        "token_file": _TOKEN_FILE,
        "insecure": _INSECURE,
        "namespace": "the release namespace",
        "actorpool_deployment": "the name of the chart's ActorPool Deployment (the only one its Role may scale)",
        "kubeconfig": "in a cluster the Kubernetes client uses the pod's ServiceAccount",
    },
}
VALUES = load_values(CHART / "values.yaml")


@pytest.mark.parametrize("component", SETTINGS)
def test_every_settings_field_is_a_config_key_or_owned_by_the_chart(component: str) -> None:
    fields = set(SETTINGS[component].model_fields)
    config = set(VALUES[component]["config"])
    owned = set(CHART_OWNED[component])
    shared = SHARED[component]
    assert not config - fields, f"{component}.config keys that are no settings field: {sorted(config - fields)}"
    assert not owned - fields, f"stale CHART_OWNED entries for {component}: {sorted(owned - fields)}"
    assert not shared - fields, f"shared keys {component} lacks: {sorted(shared - fields)}"
    missing = fields - config - owned - shared
    assert not missing, (
        f"settings fields of {component} in no config block and not owned by the chart: {sorted(missing)}"
    )
    assert not (config & owned) and not (config & shared) and not (owned & shared)
    assert all(reason.strip() for reason in CHART_OWNED[component].values())


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


@pytest.mark.parametrize("component", SETTINGS)
def test_rendered_environment_is_accepted_by_the_service(
    component: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain, from_secrets = rendered_env(render(TOKENS), component)
    fields = SETTINGS[component].model_fields
    for name in [*plain, *from_secrets]:
        assert name.startswith("IMPALA_") and name.removeprefix("IMPALA_").lower() in fields, name
    token = tmp_path / "token"
    token.write_text("t")
    stand_ins = {"IMPALA_REDIS_URL": "redis://redis:6379/0", "IMPALA_TOKEN_FILE": str(token)}
    for name, value in {**plain, **{n: stand_ins[n] for n in from_secrets}}.items():
        monkeypatch.setenv(name, stand_ins.get(name, value))
    settings = SETTINGS[component]()
    for key, value in VALUES[component]["config"].items():
        assert getattr(settings, key) == value, f"{component}.config.{key} reads back as {getattr(settings, key)!r}"
    for key in SHARED[component] - {"run"}:
        assert getattr(settings, key) == VALUES["shared"][key], key
    assert settings.model_dump()["run"] == "demo"  # shared.run "" = the release name


@pytest.mark.parametrize("component", SETTINGS)
def test_values_defaults_are_the_service_defaults(component: str) -> None:
    """A default changed in the service and not in values.yaml (or the other way) shows up here."""
    fields = SETTINGS[component].model_fields
    for key, value in VALUES[component]["config"].items():
        assert fields[key].default == value, (
            f"{component}.config.{key}: chart {value!r}, service {fields[key].default!r}"
        )
    for key in SHARED[component] - {"run"}:
        assert fields[key].default == VALUES["shared"][key], key
