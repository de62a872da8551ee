"""Smoke test: an image env (ALE/Pong-v5, standard Atari preprocessing, the shallow CNN) runs through
the whole local stack: env client → ActorPool → Redis → learner → weights, for a few hundred steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from impala.local.recorder import read_metrics

pytest.importorskip("ale_py", reason="the 'atari' extra (ale-py) is not installed")
pytestmark = pytest.mark.slow


def test_pong_runs_through_the_whole_stack(tmp_path: Path) -> None:
    run_dir = tmp_path / "pong"
    argv = [sys.executable, "-m", "impala", "local", "--env", "ALE/Pong-v5", "--no-target", "--no-live"]
    argv += ["--max-env-steps", "400", "--max-seconds", "240", "--run-dir", str(run_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    last = read_metrics(run_dir / "metrics.csv")[-1]
    assert last["env_steps"] >= 400
    assert last["learner_step"] >= 1, "the learner took an update on Atari-size rollouts"
    assert "ALE/Pong-v5" in (run_dir / "config.json").read_text()
