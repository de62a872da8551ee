"""``impala eval`` and ``impala export`` on checkpoints written with the core API."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from impala.core.checkpoints import save_checkpoint
from impala.core.errors import UserError
from impala.core.evaluation import run_episodes
from impala.core.models import Policy, build_model, spec_for_env
from impala.tools.evaluate import evaluate_checkpoint, make_eval_env
from impala.tools.export import checkpoint_policy, export_checkpoint

# A linear controller that balances CartPole: push right when 3·angle + angular velocity > 0.
CONTROLLER = np.array([0.0, 0.0, 3.0, 1.0])


def _controller_model() -> Policy:
    """An MLP whose greedy action is exactly the linear controller (tanh units saturated on purpose)."""
    model = build_model(spec_for_env("CartPole-v1", hidden_size=8))
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        torso = model.torso
        assert isinstance(torso, torch.nn.Sequential)
        first, second = torso[1], torso[3]
        assert isinstance(first, torch.nn.Linear)
        assert isinstance(second, torch.nn.Linear)
        first.weight[0] = torch.tensor(CONTROLLER * 1000.0)
        second.weight[0, 0] = 10.0
        model.policy.weight[:, 0] = torch.tensor([-5.0, 5.0])
    return model


def _save(model: Policy, directory: Path, **config: object) -> Path:
    payload = {
        "model": model.state_dict(),
        "config": {"env": "CartPole-v1", "hidden_size": model.spec.hidden_size, **config},
        "policy_version": 7,
    }
    return save_checkpoint(directory, payload, step=12, keep=1)


def _controller_returns(seeds: range) -> list[float]:
    env = gym.make("CartPole-v1")
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, over = 0.0, False
        while not over:
            obs, reward, terminated, truncated, _ = env.step(int(CONTROLLER @ obs > 0))
            total += float(reward)
            over = terminated or truncated
        returns.append(total)
    return returns


def test_greedy_eval_plays_the_checkpointed_policy(tmp_path: Path) -> None:
    path = _save(_controller_model(), tmp_path / "ckpt")
    model, config = checkpoint_policy(path)
    assert config["policy_version"] == 7
    result = run_episodes(model, make_eval_env("CartPole-v1", None), 4, greedy=True, seed=10)
    assert result.returns == _controller_returns(range(10, 14))
    assert result.lengths == [int(r) for r in result.returns]


def test_eval_command_prints_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(_controller_model(), tmp_path / "ckpt")
    assert evaluate_checkpoint(path, "CartPole-v1", 3, greedy=True, seed=0) == 0
    expected = np.array(_controller_returns(range(3)))
    assert f"mean return {expected.mean():.2f} ± {expected.std():.2f} over 3 episodes" in capsys.readouterr().out


def test_eval_refuses_an_env_the_policy_cannot_act_in(tmp_path: Path) -> None:
    path = _save(_controller_model(), tmp_path / "ckpt")
    with pytest.raises(UserError, match="pass --env CartPole-v1"):
        evaluate_checkpoint(path, "Acrobot-v1", 1)


def test_video_without_moviepy_says_how_to_get_it(tmp_path: Path) -> None:
    if importlib.util.find_spec("moviepy") is not None:
        pytest.skip("moviepy is installed here; the message is for machines without it")
    path = _save(_controller_model(), tmp_path / "ckpt")
    with pytest.raises(UserError, match="pip install moviepy"):
        evaluate_checkpoint(path, "CartPole-v1", 1, video_dir=tmp_path / "videos")


# Runs in a fresh interpreter without site processing (-S, so the editable install's .pth never loads)
# and isolated (-I: no PYTHONPATH, no cwd): only torch's site-packages is put back on the path.
_LOADER = """
import json, sys
sys.path.append(sys.argv[1])
try:
    import impala
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("impala is importable; the isolation is broken")
import torch
extra = {"impala.json": ""}
policy = torch.jit.load(sys.argv[2], _extra_files=extra)
inputs = [torch.tensor(x, dtype=torch.float32) for x in json.loads(sys.argv[3])]
outputs = policy(*inputs)
print(json.dumps({"outputs": [o.tolist() for o in outputs], "meta": json.loads(extra["impala.json"]),
                  "impala_loaded": any(m.startswith("impala") for m in sys.modules)}))
"""


@pytest.mark.parametrize("use_lstm", [False, True])
def test_exported_policy_runs_without_impala(tmp_path: Path, use_lstm: bool) -> None:
    model = build_model(spec_for_env("CartPole-v1", hidden_size=16, use_lstm=use_lstm))
    path = _save(model, tmp_path / "ckpt", use_lstm=use_lstm)
    out = tmp_path / "policy.pt"
    assert export_checkpoint(path, out) == 0
    obs = torch.randn(5, 4)  # a batch size the trace never saw
    inputs = [obs] + ([torch.randn(5, 16), torch.randn(5, 16)] if use_lstm else [])
    site_packages = str(Path(torch.__file__).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LOADER, site_packages, str(out), json.dumps([x.tolist() for x in inputs])],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert not result["impala_loaded"]
    assert result["meta"]["env"] == "CartPole-v1"
    assert result["meta"]["policy_version"] == 7
    with torch.no_grad():
        if use_lstm:
            ref = model(obs.unsqueeze(0), torch.zeros(1, 5, dtype=torch.bool), (inputs[1], inputs[2]))
            expected = [ref.logits[0], ref.baseline[0], *ref.core_state]
        else:
            ref = model(obs.unsqueeze(0), torch.zeros(1, 5, dtype=torch.bool))
            expected = [ref.logits[0], ref.baseline[0]]
    assert len(result["outputs"]) == len(expected)
    for got, want in zip(result["outputs"], expected, strict=True):
        assert torch.allclose(torch.tensor(got), want, atol=1e-5)


def test_export_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": {}}, bogus)
    with pytest.raises(UserError, match="not an impala checkpoint"):
        export_checkpoint(bogus, tmp_path / "policy.pt")
    assert not (tmp_path / "policy.pt").exists()
