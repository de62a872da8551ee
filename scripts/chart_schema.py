"""Write the `config` and `shared` parts of helm/impala/values.schema.json from the services' settings.

Each key of a component's `config` block in values.yaml gets the JSON schema of the settings field of
the same name (type, bounds, pattern, description), and the block rejects unknown keys. So the chart
refuses a value the service would refuse, with Helm's message naming the key. The rest of the schema
is hand-written. ``--check`` exits 1 when the committed schema is stale (tests/chart runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from impala.actorpool.settings import ActorPoolSettings
from impala.control.settings import ControlSettings
from impala.core.env_spec import ACTION_TYPES, OBSERVATION_DTYPES
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
    return schema


def generate(schema: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its generated parts replaced from the settings classes and values.yaml keys."""
    props = schema["properties"]
    for component, settings in COMPONENTS.items():
        props[component]["properties"]["config"] = config_schema(settings, list(values[component]["config"]))
    props["shared"] = shared_schema(list(values["shared"]))
    return schema


def render() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = generate(json.loads(SCHEMA.read_text()), values)
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the settings parts of values.schema.json.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the committed schema is stale.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if SCHEMA.read_text() != text:
            sys.stderr.write("values.schema.json is stale: run `python scripts/chart_schema.py`\n")
            return 1
        return 0
    SCHEMA.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
