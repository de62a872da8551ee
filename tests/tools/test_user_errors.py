"""User errors end ``impala`` with one line that says what is wrong and what to do, exit code 2 and
no traceback (``--debug`` shows it). Each case runs the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from impala.core.checkpoints import save_checkpoint
from impala.core.models import build_model, spec_for_env


def impala(*args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    argv = [sys.executable, "-m", "impala", *(["--debug"] if debug else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = build_model(spec_for_env("CartPole-v1", hidden_size=8))
    payload = {"model": model.state_dict(), "config": {"env": "CartPole-v1", "hidden_size": 8}, "policy_version": 1}
    return save_checkpoint(tmp_path / "ckpt", payload, step=1, keep=1)


def test_unknown_env_id(checkpoint: Path) -> None:
    assert_one_line(
        impala("eval", "--checkpoint", str(checkpoint), "--env", "NoSuchEnv-v0"), "unknown env id 'NoSuchEnv-v0'"
    )
    assert_one_line(impala("env", "--env", "NoSuchEnv-v0"), "unknown env id 'NoSuchEnv-v0'")
    assert_one_line(impala("local", "--env", "NoSuchEnv-v0", "--no-live"), "unknown env id 'NoSuchEnv-v0'")


def test_debug_shows_the_traceback(checkpoint: Path) -> None:
    result = impala("eval", "--checkpoint", str(checkpoint), "--env", "NoSuchEnv-v0", debug=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UserError" in result.stderr


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_a_file_that_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(content)
    assert_one_line(impala("eval", "--checkpoint", str(bogus)), "is not an impala checkpoint", "ckpt-*.pt")
    assert_one_line(
        impala("export", "--checkpoint", str(bogus), "--out", str(tmp_path / "p.pt")), "not an impala checkpoint"
    )
    assert_one_line(impala("eval", "--checkpoint", str(tmp_path / "missing.pt")), "does not exist")


def test_a_checkpoint_of_another_env_or_spec(checkpoint: Path, tmp_path: Path) -> None:
    assert_one_line(impala("eval", "--checkpoint", str(checkpoint), "--env", "Acrobot-v1"), "pass --env CartPole-v1")
    payload = torch.load(checkpoint, weights_only=False)
    payload["config"]["hidden_size"] = 32  # the stored config no longer describes the stored weights
    other = save_checkpoint(tmp_path / "other", payload, step=2, keep=1)
    assert_one_line(impala("export", "--checkpoint", str(other), "--out", str(tmp_path / "p.pt")), "do not fit")


def test_export_into_a_missing_directory_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "policy.pt"
    assert_one_line(impala("export", "--checkpoint", str(checkpoint), "--out", str(out)), "does not exist")
    assert not (tmp_path / "no").exists()


def test_an_address_never_reached_gives_up_after_the_attempts_it_names() -> None:
    result = impala(
        "env", "--address", "not-a-host-port", "--connect-attempts", "3", "--backoff-base-s", "0.01",
        "--backoff-max-s", "0.05", "--num-envs", "1",
    )  # fmt: skip
    assert_one_line(result, "not-a-host-port", "after 3 attempts", "--address")
