"""values.schema.json rejects bad values with a message naming the key, and its generated parts (the
`config` and `shared` blocks) are up to date with the services' settings classes."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest

from tests.chart.render import CHART, TOKENS, import_script, merge, render

BAD_VALUES = [
    ({"actorpool": {"replicas": -1}}, "at '/actorpool/replicas': minimum: got -1, want 0"),
    ({"learner": {"replicas": 1.5}}, "at '/learner/replicas': got number, want integer"),
    ({"learner": {"config": {"dist_backend": "mpi"}}}, "at '/learner/config/dist_backend'"),
    (
        {"actorpool": {"config": {"replicas": 3}}},
        "at '/actorpool/config': additional properties 'replicas' not allowed",
    ),
    (
        {"learner": {"config": {"batch_sise": 16}}},
        "at '/learner/config': additional properties 'batch_sise' not allowed",
    ),
    ({"learner": {"config": {"batch_size": 0}}}, "at '/learner/config/batch_size': minimum: got 0, want 1"),
    ({"learner": {"config": {"device": "tpu"}}}, "at '/learner/config/device'"),
    ({"weights": {"config": {"chunk_bytes": 8388608}}}, "at '/weights/config/chunk_bytes': maximum"),
    ({"control": {"config": {"log_level": "LOUD"}}}, "at '/control/config/log_level'"),
    (
        {"actorpool": {"config": {"shed_when_full": "yes"}}},
        "at '/actorpool/config/shed_when_full': got string, want boolean",
    ),
    ({"shared": {"unroll_length": 0}}, "at '/shared/unroll_length': minimum: got 0, want 1"),
    ({"shared": {"run": "two words"}}, "at '/shared/run'"),
    ({"learner": {"replicas": 257}}, "at '/learner/replicas': maximum: got 257, want 256"),
    ({"weights": {"replicas": 3}}, "at '/weights/replicas'"),
    ({"actorpool": {"replica": 2}}, "at '/actorpool': additional properties 'replica' not allowed"),
    ({"actorpool": {"service": {"type": "Public"}}}, "at '/actorpool/service/type'"),
    ({"redis": {"external": {"url": "http://redis:6379"}}}, "at '/redis/external/url'"),
    ({"metricsPort": 70000}, "at '/metricsPort': maximum"),
    ({"unknownTopLevel": True}, "additional properties 'unknownTopLevel' not allowed"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[m.split("'")[1] for _, m in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(bad: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema(merge(TOKENS, bad))
    assert message in str(caught.value)


def test_render_enforces_the_schema_too() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="additional properties 'bogus' not allowed"):
        render(merge(TOKENS, {"control": {"config": {"bogus": 1}}}))


def test_every_config_block_is_strict() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for component in ("actorpool", "learner", "weights", "control"):
        config = schema["properties"][component]["properties"]["config"]
        assert config["additionalProperties"] is False, component
        assert all(prop.get("description") for prop in config["properties"].values()), component
    assert schema["properties"]["shared"]["additionalProperties"] is False


def test_generated_schema_parts_are_up_to_date() -> None:
    generator = import_script("chart_schema")
    committed = (CHART / "values.schema.json").read_text()
    assert generator.render() == committed, "run `python scripts/chart_schema.py` and commit values.schema.json"


def test_generator_refuses_a_config_key_the_service_lacks() -> None:
    generator = import_script("chart_schema")
    with pytest.raises(SystemExit, match="LearnerSettings lacks: not_a_field"):
        generator.config_schema(generator.COMPONENTS["learner"], ["batch_size", "not_a_field"])
