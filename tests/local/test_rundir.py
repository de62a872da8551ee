"""Run directory files: endpoints.json (0600), config.json (secrets masked), names."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from impala.client.settings import ClientSettings
from impala.core.settings import MASK, public_values
from impala.learner.settings import LearnerSettings
from impala.local.plan import Topology, build_plan
from impala.local.rundir import default_run_dir, run_name, write_config, write_private_json


def test_endpoints_file_is_private_from_creation_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text("{}")
    path.chmod(0o644)  # an old, too-open file is replaced, not rewritten in place
    write_private_json(path, {"ingress": ["127.0.0.1:1"], "ingress_token": "t0ken-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["ingress"] == ["127.0.0.1:1"]
    assert [p.name for p in tmp_path.iterdir()] == ["endpoints.json"]  # no temp file left


def test_config_masks_every_token(tmp_path: Path) -> None:
    ingress, control, weights = "ingress-token-0123456789", "control-token-0123456789", "weights-token-0123456789"
    files = (tmp_path / "i.token", tmp_path / "c.token", tmp_path / "w.token")
    for token, file in zip((ingress, control, weights), files, strict=True):
        file.write_text(token)
    plan = build_plan(
        Topology("CartPole-v1", clients=2, envs_per_client=3, pools=2, seed=5),
        run="r1",
        redis_url="redis://127.0.0.1:1/0",
        checkpoint_dir=tmp_path / "ckpt",
        token_files=files,
        overrides={"learner": {"batch_size": 4}},
    )
    path = tmp_path / "config.json"
    write_config(path, {"env": "CartPole-v1"}, plan.services())
    text = path.read_text()
    assert ingress not in text
    assert control not in text
    assert weights not in text
    doc = json.loads(text)
    assert set(doc["services"]) == {"weights", "control", "learner", "actorpool-0", "actorpool-1", "env-0", "env-1"}
    assert doc["services"]["actorpool-1"]["token_file"] == str(files[0])
    assert doc["services"]["control"]["token_file"] == str(files[1])
    assert doc["services"]["learner"]["weights_token_file"] == str(files[2])
    assert public_values(ClientSettings(token="secret-0123456789"))["token"] == MASK
    assert public_values(LearnerSettings(weights_token="secret-0123456789"))["weights_token"] == MASK
    assert doc["services"]["learner"]["batch_size"] == 4
    assert doc["services"]["learner"]["checkpoint_dir"] == str(tmp_path / "ckpt")


def test_names_are_filesystem_and_redis_safe() -> None:
    assert default_run_dir("ALE/Pong-v5", Path("runs"), now=0).name.startswith("ALE-Pong-v5-19")
    assert run_name(Path("runs/ALE-Pong-v5-20260101-000000")) == "ALE-Pong-v5-20260101-000000"
    long = run_name(Path("x" * 100))
    assert len(long) == 63
    LearnerSettings(run=long)  # accepted by the settings' pattern
    assert run_name(Path("_weird name!")) == "weird-name-"
