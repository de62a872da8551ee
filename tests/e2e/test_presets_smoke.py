"""Smoke test per preset and env family of the results suite (docs/results.md): a few hundred env
steps of each through the whole local stack (env client → ActorPool → Redis → learner → weights, real
subprocesses), so no preset or env wrapper rots. Each run must end in order at its env-step budget,
with those steps counted and the learner's updates made. An env whose optional extra is missing is
skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from impala.core.learn import LearnConfig
from impala.core.presets import resolve
from impala.local.recorder import read_metrics

pytestmark = pytest.mark.slow

STEPS = 400


def budget(env: str) -> int:
    """A few hundred env steps, and at least two of the preset's batches (T × B each) for the learner."""
    config = resolve(env, {}, {"unroll_length": LearnConfig.unroll_length, "batch_size": LearnConfig.batch_size})
    return max(STEPS, 2 * config["unroll_length"] * config["batch_size"])


def _needs(module: str, extra: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"the {extra!r} extra ({module}) is not installed"
    )


FAMILIES = [
    pytest.param("CartPole-v1", [], id="cartpole"),
    pytest.param("Acrobot-v1", [], id="acrobot"),
    # Continuous actions (Gaussian head) and its preset's T 20, B 16 on both sides of the wire.
    pytest.param("Pendulum-v1", [], id="pendulum"),
    pytest.param("impala.envs:impala/CartPoleNoVelocity-v0", ["--use-lstm"], id="cartpole-no-velocity-lstm"),
    pytest.param(
        "impala.envs:impala/MinAtar-Breakout-v1", [], id="minatar-breakout", marks=_needs("minatar", "minatar")
    ),
    pytest.param("LunarLander-v3", [], id="lunarlander", marks=_needs("Box2D", "box2d")),
    # Standard Atari preprocessing and the shallow CNN: Atari-size rollouts through every service.
    pytest.param("ALE/Pong-v5", [], id="pong", marks=_needs("ale_py", "atari")),
]


@pytest.mark.parametrize(("env", "flags"), FAMILIES)
def test_env_runs_through_the_whole_stack(env: str, flags: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "impala", "local", "--env", env, "--no-target", "--no-live", *flags]
    steps = budget(env)
    argv += ["--max-env-steps", str(steps), "--max-seconds", "240", "--run-dir", str(run_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "max_env_steps:" in result.stdout, "ended at its env-step budget, not by the wall-clock guard"
    last = read_metrics(run_dir / "metrics.csv")[-1]
    assert last["env_steps"] >= steps
    assert last["learner_step"] >= 1, "the learner made updates"
    learner = json.loads((run_dir / "config.json").read_text())["services"]["learner"]
    assert learner["env"] == env
    assert learner["use_lstm"] == ("--use-lstm" in flags)
