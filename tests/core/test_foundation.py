"""Generated code is fresh, the CLI lists every service, settings refuse nonsense."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ["local", "actorpool", "learner", "weights", "control", "env", "eval", "export", "bench"]


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(["bash", "scripts/proto.sh", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_proto_check_fails_after_unregenerated_edit(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for part in ("scripts", "proto", "services"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / ".venv").symlink_to(Path(sys.prefix))
    proto = copy / "proto/impala/actorpool/v1/actorpool.proto"
    proto.write_text(proto.read_text().replace("uint32 max_envs = 4;", "uint32 max_envs = 4;\n  string note = 5;"))
    result = subprocess.run(["bash", "scripts/proto.sh", "--check"], cwd=copy, capture_output=True, text=True)
    assert result.returncode != 0
    assert "actorpool_pb2.py is stale" in result.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "impala", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_settings_refuse_nonsense_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "impala", "actorpool", "--insecure", "--unroll-length", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--unroll-length" in result.stderr


def test_token_is_required_unless_insecure() -> None:
    from pydantic import ValidationError

    from impala.actorpool.settings import ActorPoolSettings

    with pytest.raises(ValidationError, match="no token configured"):
        ActorPoolSettings()
    assert ActorPoolSettings(insecure=True).bearer_token() == ""
    assert ActorPoolSettings(token="s3cret-token").public_dict()["token"] == "**********"
