"""Write the `config` and `shared` parts of helm/impala/values.schema.json from the services' settings.

A component's `config` block accepts every field of its settings class that the chart does not own
(``CHART_OWNED``, each with its reason) and that is not run-wide (``SHARED``), typed as the field is
(type, bounds, pattern, description), and rejects unknown keys. So the chart refuses a value the
service would refuse, with Helm's message naming the key. values.yaml sets none of them: the services
resolve what a user leaves out (impala.core.presets, ADR 0024). The rest of the schema is hand-written. ``--check`` exits 1 when the committed schema is stale (tests/chart runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.control.settings import ControlSettings
from impala.core.env_spec import ACTION_TYPES, OBSERVATION_DTYPES
from impala.core.settings import fields_in_scope
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings

CHART = Path(__file__).resolve().parents[1] / "helm" / "impala"
SCHEMA = CHART / "values.schema.json"
# The chart's components and the settings class each one runs with.
COMPONENTS: dict[str, type[BaseSettings]] = {
    "actorpool": ActorPoolSettings,
    "learner": LearnerSettings,
    "weights": WeightsSettings,
    "control": ControlSettings,
}
# `shared` holds fields of both the pools and the learner; the pools' class describes them.
SHARED_FROM: type[BaseSettings] = ActorPoolSettings
# Fields set once in `shared` (scope run or wire, declared on the field), so the services cannot disagree.
SHARED: dict[str, frozenset[str]] = {
    component: fields_in_scope(settings, scopes=("run", "wire")) for component, settings in COMPONENTS.items()
}
_ADDRESS = "the chart binds all interfaces"
_PORT = "<component>.containerPort: Service, probes and NetworkPolicy must use the same port"
_METRICS = "the chart-wide metricsPort: Services, NetworkPolicies and ServiceMonitors must agree"
_REDIS = "the redis-url Secret, built from the redis block (password inside) or redis.external"
_TOKEN = "auth.<component>: a Secret (generated unless given) mounted as a file; never in the pod spec"
_TOKEN_FILE = "the path of that mounted Secret"
_INSECURE = "auth.insecure, the chart-wide switch off authentication"
_WEIGHTS = "the in-cluster address of the chart's weight service"
_WEIGHTS_TOKEN = "auth.weights: its Secret mounted as a file (weights_token_file)"
_WEIGHTS_TOKEN_FILE = "the path of the mounted weight-service token"
# What every server of the chart (actorpool, weights, control) gets from the chart.
_SERVER = {
    "host": _ADDRESS,
    "port": _PORT,
    "metrics_port": _METRICS,
    "redis_url": _REDIS,
    "token": _TOKEN,
    "token_file": _TOKEN_FILE,
    "insecure": _INSECURE,
}
# Settings fields the chart owns (exactly the fields of scope deployment; ``check_owned``), with the reason.
# Anything else is a `config` key.
CHART_OWNED: dict[str, dict[str, str]] = {
    "actorpool": {
        **_SERVER,
        "tls_cert": "actorpool.tls: a kubernetes.io/tls Secret mounted as files",
        "tls_key": "actorpool.tls: a kubernetes.io/tls Secret mounted as files",
        "weights_address": _WEIGHTS,
        "weights_token": _WEIGHTS_TOKEN,
        "weights_token_file": _WEIGHTS_TOKEN_FILE,
        "checkpoint": "pools take their weights from the weight service; no checkpoint volume is mounted",
        "pool_id": "must differ per replica; the default (hostname-pid) is unique per pod",
    },
    "learner": {
        "metrics_port": _METRICS,
        "redis_url": _REDIS,
        "weights_address": _WEIGHTS,
        "weights_token": _WEIGHTS_TOKEN,
        "weights_token_file": _WEIGHTS_TOKEN_FILE,
        "checkpoint_dir": "the mount path of the checkpoint volume (PVC)",
        "consumer": "the default, the hostname, is the StatefulSet pod name: stable across restarts, so a "
        "restarted learner reclaims its own pending entries",
    },
    "weights": {
        **_SERVER,
        "bulk_port": "weights.bulkContainerPort: container port, Service port and NetworkPolicy must agree, and "
        "subscribers dial the port the service announces",
        "tls_cert": "in-cluster only and fenced by a NetworkPolicy; use a service mesh for mTLS",
        "tls_key": "in-cluster only and fenced by a NetworkPolicy; use a service mesh for mTLS",
    },
    "control": {
        **_SERVER,
        "metrics_port": "the chart scrapes /metrics on the control API's HTTP port (with its token)",
        "namespace": "the release namespace",
        "actorpool_deployment": "the name of the chart's ActorPool Deployment (the only one its Role may scale)",
        "kubeconfig": "in a cluster the Kubernetes client uses the pod's ServiceAccount",
    },
}
KEEP = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "enum", "description")


def field_schema(settings: type[BaseSettings], name: str) -> dict[str, Any]:
    """The JSON schema of one settings field, without pydantic's titles and formats."""
    prop: dict[str, Any] = settings.model_json_schema()["properties"][name]
    out = {k: prop[k] for k in KEEP if k in prop}
    if "anyOf" in prop:  # Optional[...]: the chart renders null as "unset"
        out["anyOf"] = [{k: v for k, v in alt.items() if k in KEEP} for alt in prop["anyOf"]]
    return out


def config_schema(settings: type[BaseSettings], keys: list[str]) -> dict[str, Any]:
    unknown = sorted(set(keys) - set(settings.model_fields))
    if unknown:
        raise SystemExit(f"values.yaml config keys that {settings.__name__} lacks: {', '.join(unknown)}")
    return {
        "type": "object",
        "description": f"Settings of {settings.__name__} (IMPALA_<NAME> environment variables).",
        "additionalProperties": False,
        "properties": {key: field_schema(settings, key) for key in sorted(keys)},
    }


# shared.env_spec is the spec itself, in impala.core.env_spec's file format, not the path the services
# read: the chart renders it into a ConfigMap mounted as a file and sets IMPALA_ENV_SPEC to its path.
ENV_SPEC: dict[str, Any] = {
    "anyOf": [
        {"type": "null"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["observation", "action"],
            "properties": {
                "observation": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["shape", "dtype"],
                    "properties": {
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                        "dtype": {"enum": list(OBSERVATION_DTYPES)},
                    },
                },
                "action": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": list(ACTION_TYPES)}},
                },
            },
        },
    ],
    "description": "The run's env spec (docs/bring-your-own-env.md): observation and action spaces, so the "
    "services need no Gymnasium env; null = derive it from env.",
}


def shared_schema(keys: list[str]) -> dict[str, Any]:
    schema = config_schema(SHARED_FROM, keys)
    schema["description"] = "Fields every service that has them receives (pools and learner must agree)."
    if "env_spec" in schema["properties"]:
        schema["properties"]["env_spec"] = ENV_SPEC
    run = schema["properties"]["run"]
    run["pattern"] = f"^$|{run['pattern']}"  # empty = the release name
    for key, prop in schema["properties"].items():
        if key not in ("run", "env", "env_spec"):  # null = left to the resolver (preset or default)
            schema["properties"][key] = {"anyOf": [{"type": "null"}, prop], "description": prop.pop("description")}
    return schema


def config_keys(component: str) -> list[str]:
    """The fields a user may set in ``<component>.config``: neither chart-owned nor run-wide."""
    fields = set(COMPONENTS[component].model_fields)
    return sorted(fields - set(CHART_OWNED[component]) - SHARED[component])


def check_owned() -> None:
    """``CHART_OWNED`` lists exactly each component's deployment-scoped fields (it adds only the reasons)."""
    for component, settings in COMPONENTS.items():
        declared = fields_in_scope(settings, scopes=("deployment",))
        if declared != set(CHART_OWNED[component]):
            raise SystemExit(
                f"CHART_OWNED[{component!r}] disagrees with the fields {settings.__name__} declares deployment-scoped: "
                f"missing {sorted(declared - set(CHART_OWNED[component]))}, "
                f"extra {sorted(set(CHART_OWNED[component]) - declared)}"
            )


def generate(schema: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its generated parts replaced from the settings classes (and the `shared` keys of
    values.yaml)."""
    check_owned()
    props = schema["properties"]
    for component, settings in COMPONENTS.items():
        props[component]["properties"]["config"] = config_schema(settings, config_keys(component))
    props["shared"] = shared_schema(list(values["shared"]))
    return schema


def render() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = generate(json.loads(SCHEMA.read_text()), values)
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    from generated import write_or_check  # scripts/ is on sys.path when this runs as a script

    return write_or_check(SCHEMA, render, "Regenerate the settings parts of values.schema.json.", argv)


if __name__ == "__main__":
    sys.exit(main())
