"""``impala eval`` and ``impala export`` of a run trained from an env spec: the model comes from the
checkpoint's spec (a Box-action policy here), eval needs ``--env`` to play, and a spec file that
disagrees with the checkpoint is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from impala.core.checkpoints import save_checkpoint
from impala.core.env_spec import spec_of_env
from impala.core.errors import UserError
from impala.core.models import build_model, spec_for
from impala.tools.evaluate import evaluate_checkpoint
from impala.tools.export import export_checkpoint


def pendulum_checkpoint(directory: Path) -> Path:
    """A checkpoint as a spec-only run writes it: the model spec, and config naming the spec file."""
    model = build_model(spec_for(spec_of_env("Pendulum-v1"), hidden_size=8))
    config = {"env": "CartPole-v1", "env_spec": "pendulum.json"}  # env: the unused default of a spec-only run
    payload = {"model": model.state_dict(), "model_spec": model.spec.to_dict(), "config": config}
    return save_checkpoint(directory, payload, step=1, keep=1)


def test_eval_plays_a_box_policy_only_with_an_env_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = pendulum_checkpoint(tmp_path / "ckpt")
    with pytest.raises(UserError, match="pass --env ID"):
        evaluate_checkpoint(checkpoint, None, 1)
    assert evaluate_checkpoint(checkpoint, "Pendulum-v1", 2, greedy=True) == 0
    assert "Pendulum-v1: mean return" in capsys.readouterr().out
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps({"observation": {"shape": [3], "dtype": "float32"}, "action": {"type": "discrete", "n": 3}})
    )
    with pytest.raises(UserError, match=r"Discrete\(3\)"):
        evaluate_checkpoint(checkpoint, "Pendulum-v1", 1, env_spec=wrong)


def test_export_needs_no_env(tmp_path: Path) -> None:
    out = tmp_path / "policy.pt"
    assert export_checkpoint(pendulum_checkpoint(tmp_path / "ckpt"), out) == 0
    policy = torch.jit.load(str(out))  # type: ignore[no-untyped-call]
    params, value = policy(torch.zeros(5, 3))
    assert params.shape == (5, 2) and value.shape == (5,)  # the Gaussian's mean and log-std, the value
