"""The env spec file: parsing, errors that name the problem, agreement with a Gymnasium id, and the
settings that refuse a spec and an env id that disagree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from impala.actorpool.settings import ActorPoolSettings
from impala.core.env_spec import ActionSpace, EnvSpec, EnvSpecError, load_env_spec, resolve
from impala.learner.settings import LearnerSettings

CARTPOLE = {"observation": {"shape": [4], "dtype": "float32"}, "action": {"type": "discrete", "n": 2}}


def write(tmp_path: Path, doc: object, name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_yaml_and_json_files_and_unbounded_box_sides(tmp_path: Path) -> None:
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text(
        "observation: {shape: [3, 84, 84], dtype: uint8}\n"
        "action: {type: box, shape: [2], low: [-1.0, null], high: [1.0, null]}\n"
    )
    spec = load_env_spec(yaml_file)
    assert spec.observation_shape == (3, 84, 84) and spec.observation_dtype == "uint8"
    assert spec.action.low == (-1.0, -math.inf) and spec.action.high == (1.0, math.inf)
    assert spec.action.to_dict()["low"] == [-1.0, None]
    assert load_env_spec(write(tmp_path, CARTPOLE)) == EnvSpec((4,), "float32", ActionSpace.discrete(2))
    assert ActionSpace.multi_discrete([3, 2]).param_size == 5 and ActionSpace.box([2], -1, 1).param_size == 4


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"observation": {"shape": [4], "dtype": "float32"}}, "exactly 'observation' and 'action'"),
        ({**CARTPOLE, "observation": {"shape": [4], "dtype": "complex64"}}, "complex64"),
        ({**CARTPOLE, "action": {"type": "tuple"}}, "'tuple'"),
        ({**CARTPOLE, "action": {"type": "discrete", "n": 0}}, "n >= 1"),
        ({**CARTPOLE, "action": {"type": "multi_discrete", "nvec": [3, 0]}}, "nvec"),
        ({**CARTPOLE, "action": {"type": "box", "shape": [2], "low": [-1.0], "high": [1.0, 1.0]}}, "prod(shape)=2"),
        ({**CARTPOLE, "action": {"type": "box", "shape": [1], "low": [1.0], "high": [-1.0]}}, "low < high"),
        ({**CARTPOLE, "action": {"type": "discrete", "n": 2, "start": 1}}, "exactly ['n']"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_problem(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(EnvSpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_env_spec(write(tmp_path, doc))


def test_spec_and_env_id_must_agree(tmp_path: Path) -> None:
    assert resolve("CartPole-v1", write(tmp_path, CARTPOLE)) == EnvSpec((4,), "float32", ActionSpace.discrete(2))
    box = write(tmp_path, {**CARTPOLE, "action": {"type": "box", "shape": [1], "low": [-1.0], "high": [1.0]}}, "b.json")
    with pytest.raises(EnvSpecError, match=r"--env CartPole-v1 and --env-spec .* disagree.*Discrete\(2\).*Box"):
        resolve("CartPole-v1", box)
    for settings, extra in ((ActorPoolSettings, {"insecure": True}), (LearnerSettings, {})):
        with pytest.raises(ValidationError, match="disagree"):
            settings(env="CartPole-v1", env_spec=box, **extra)
        alone = settings(env_spec=box, **extra)
        assert alone.env_id() is None  # the default id is not checked against (nor used for) the spec
