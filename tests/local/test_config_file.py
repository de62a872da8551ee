"""``impala local`` as a research tool: hyperparameter flags, ``--config FILE``, and exact replays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from impala.core.settings import MASK
from impala.local.config_file import ConfigFileError, hyperparameter_fields, load
from impala.local.plan import SESSION_FIELDS, Plan, Topology, build_plan
from impala.local.rundir import write_config


def _plan(tmp_path: Path, overrides: dict[str, dict[str, Any]]) -> Plan:
    files = (tmp_path / "i.token", tmp_path / "c.token", tmp_path / "w.token")
    for file in files:
        file.write_text("a-token-0123456789")
    return build_plan(
        Topology("Acrobot-v1", clients=1, envs_per_client=4, pools=2, seed=3),
        run="r1",
        redis_url="redis://127.0.0.1:1/0",
        checkpoint_dir=tmp_path / "ckpt",
        token_files=files,
        overrides=overrides,
    )


def test_every_learner_model_and_pool_hyperparameter_is_a_flag() -> None:
    fields = hyperparameter_fields()
    for name in ("learning_rate", "optimizer", "unroll_length", "batch_size", "hidden_size", "use_lstm", "model"):
        assert "learner" in fields[name], name
    for name in ("max_batch_size", "batch_timeout_s", "buffer_capacity", "inference"):
        assert fields[name] == ("actorpool",), name
    assert not set(fields) & (SESSION_FIELDS | {"redis_url", "checkpoint_dir", "env"})


def test_config_json_replays_the_run_exactly(tmp_path: Path) -> None:
    """A run's config.json, read back, rebuilds the same learner and pool settings (session fields aside),
    and its masked secrets are never read as values."""
    first = _plan(tmp_path, {"learner": {"learning_rate": 5e-4, "hidden_size": 32}, "actorpool": {"max_batch_size": 7}})
    path = tmp_path / "config.json"
    write_config(path, {"env": "Acrobot-v1", "clients": 1, "run_dir": "x"}, first.services())
    doc = json.loads(path.read_text())
    doc["services"]["learner"]["weights_token"] = MASK  # as a run with a weights token writes it
    path.write_text(json.dumps(doc))
    local, overrides = load(path)
    assert local == {"env": "Acrobot-v1", "clients": 1}
    assert MASK not in json.dumps(overrides) and "weights_token" not in overrides["learner"]
    (tmp_path / "again").mkdir()
    second = _plan(tmp_path / "again", overrides)
    for a, b in ((first.learner, second.learner), (first.pools[1], second.pools[1])):
        same = {k: v for k, v in a.model_dump().items() if k not in SESSION_FIELDS and k != "checkpoint_dir"}
        assert same == {k: v for k, v in b.model_dump().items() if k in same}
    assert second.learner.learning_rate == 5e-4 and second.pools[0].max_batch_size == 7
    assert second.pools[0].hidden_size == 32  # model fields reach the pools through the learner


def test_hand_written_yaml_and_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "c.yaml"
    good.write_text("local:\n  env: Acrobot-v1\nservices:\n  learner:\n    entropy_cost: 0.02\n")
    assert load(good) == ({"env": "Acrobot-v1"}, {"learner": {"entropy_cost": 0.02}})
    for text, match in (
        ("services:\n  learner:\n    learning_rat: 1\n", "unknown field.*learning_rat"),
        ("local:\n  clientz: 3\n", "unknown key.*clientz"),
        ("- 1\n", "expected a mapping"),
        ("local: [\n", "not valid YAML"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigFileError, match=match):
            load(bad)


@pytest.mark.slow
def test_flags_override_the_file_in_a_real_run(tmp_path: Path) -> None:
    """The real CLI and stack: the file sets lr and B, a flag overrides B; config.json records both."""
    file = tmp_path / "c.json"
    file.write_text(
        json.dumps({"local": {"env": "CartPole-v1"}, "services": {"learner": {"learning_rate": 7e-4, "batch_size": 4}}})
    )
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "impala", "local", "--config", str(file), "--batch-size", "6", "--no-target",
            "--max-env-steps", "300", "--no-live", "--run-dir", str(run_dir)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    learner = json.loads((run_dir / "config.json").read_text())["services"]["learner"]
    assert (learner["learning_rate"], learner["batch_size"]) == (7e-4, 6)
    local_section = json.loads((run_dir / "config.json").read_text())["local"]
    assert (local_section["env"], local_section["max_env_steps"]) == ("CartPole-v1", 300)  # the flag won
    assert "config: env=CartPole-v1" in proc.stdout and "batch_size=6" in proc.stdout
    bad = subprocess.run([*argv[:4], "--config", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr and "Traceback" not in bad.stderr
