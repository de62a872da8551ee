"""The plan: settings per service, consistent across services, delivered exactly through the environment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from impala.buffer.capacity import rank_buffer_floor
from impala.core.cli_options import settings_command
from impala.core.learn import LearnConfig
from impala.core.presets import preset
from impala.local.plan import (
    Plan,
    Topology,
    build_plan,
    child_environment,
    default_envs_per_client,
    service_argv,
)


def _plan(tmp_path: Path, saved: dict[str, dict[str, Any]] | None = None, learners: int = 1) -> Plan:
    files = (tmp_path / "ingress.token", tmp_path / "control.token", tmp_path / "weights.token")
    files[0].write_text("ingress-token-0123456789\n")
    files[1].write_text("control-token-0123456789\n")
    files[2].write_text("weights-token-0123456789\n")
    return build_plan(
        Topology("CartPole-v1", clients=3, envs_per_client=4, pools=2, seed=7, learners=learners),
        run="r1",
        redis_url="redis://127.0.0.1:1/0",
        checkpoint_dir=tmp_path / "ckpt",
        token_files=files,
        saved=saved,
    )


def test_services_agree_on_model_ports_and_tokens(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    learner = plan.learner
    assert learner.unroll_length == LearnConfig.for_env("CartPole-v1").unroll_length
    ports = [plan.weights.port, plan.control.port, *(p.port for p in plan.pools)]
    assert len(set(ports)) == len(ports)
    for pool in plan.pools:
        assert (pool.unroll_length, pool.hidden_size, pool.env) == (
            learner.unroll_length,
            learner.hidden_size,
            "CartPole-v1",
        )
        assert pool.weights_address == learner.weights_address
        assert pool.bearer_token() == "ingress-token-0123456789"
    addresses = [c.address for c in plan.clients]
    assert addresses == [plan.ingress[0], plan.ingress[1], plan.ingress[0]]
    assert [c.seed for c in plan.clients] == [7, 11, 15]  # no two envs share a seed
    assert plan.control.bearer_token() == "control-token-0123456789"


def test_resume_keeps_saved_hyperparameters_but_not_session_fields(tmp_path: Path) -> None:
    saved = {"learner": {"learning_rate": 0.123, "port": 1, "weights_address": "10.0.0.1:1", "redis_url": "x"}}
    plan = _plan(tmp_path, saved=saved)
    assert plan.learner.learning_rate == 0.123
    assert plan.learner.redis_url == "redis://127.0.0.1:1/0"
    assert plan.learner.weights_address.startswith("127.0.0.1:")


@pytest.mark.parametrize("name", ["weights", "control", "learner", "actorpool-1", "env-2"])
def test_the_command_line_rebuilds_exactly_the_planned_settings(tmp_path: Path, name: str) -> None:
    """The flags go through the same typer options as `impala <service>` and give back equal settings."""
    settings = _plan(tmp_path).services()[name]
    got: list[BaseSettings] = []

    def capture(parsed: BaseSettings) -> int:
        got.append(parsed)
        return 0

    app = typer.Typer()
    settings_command(app, "svc", type(settings), capture, "test")
    settings_command(app, "unused", type(settings), lambda s: 0, "second command so typer keeps the name")
    argv = service_argv("svc", settings)
    assert argv[:4] == [sys.executable, "-m", "impala", "svc"]
    result = CliRunner().invoke(app, argv[3:], env={})
    assert result.exit_code == 0, result.output
    assert got == [settings]
    assert "0123456789" not in " ".join(argv)  # tokens travel in files, never on the command line


def test_our_own_impala_variables_do_not_leak_into_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPALA_PORT", "1")
    env = child_environment({"OMP_NUM_THREADS": "1"})
    assert "IMPALA_PORT" not in env
    assert env["OMP_NUM_THREADS"] == "1"


def test_default_envs_spread_the_preset_over_clients() -> None:
    envs = preset("CartPole-v1").local_envs or preset("CartPole-v1").num_envs
    assert default_envs_per_client("CartPole-v1", 1) == envs
    assert default_envs_per_client("CartPole-v1", 2) * 2 >= envs
    assert default_envs_per_client("CartPole-v1", 0) == envs


def test_learner_ranks_share_everything_but_their_metrics_port_and_rank(tmp_path: Path) -> None:
    plan = _plan(tmp_path, learners=3)
    names = [n for n in plan.services() if n.startswith("learner")]
    assert names == ["learner-0", "learner-1", "learner-2"]
    dumps = [s.model_dump() for s in plan.learners]
    assert len({d.pop("metrics_port") for d in dumps}) == 3
    assert all(d == dumps[0] for d in dumps)
    ports = {plan.master_port, plan.weights.port, plan.control.port, *(p.port for p in plan.pools)}
    assert plan.master_port > 0 and len(ports) == 3 + len(plan.pools)
    assert plan.rank_environment("learner-2") == {
        "RANK": "2",
        "LOCAL_RANK": "2",
        "WORLD_SIZE": "3",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(plan.master_port),
    }
    alone = _plan(tmp_path)
    assert alone.learner_names == ["learner"] and alone.rank_environment("learner") == {}


def test_learners_must_divide_the_batch() -> None:
    from impala.local.stack import LocalOptions, OptionsError, resolve

    batch = LearnConfig.for_env("CartPole-v1").batch_size
    assert resolve(LocalOptions(learners=2)).options.learners == 2
    with pytest.raises(OptionsError, match=f"--learners 3 must divide the batch size {batch}"):
        resolve(LocalOptions(learners=3))


def test_the_buffer_holds_what_every_rank_may_read_ahead(tmp_path: Path) -> None:
    batch = LearnConfig.for_env("CartPole-v1").batch_size
    one = _plan(tmp_path).pools[0].buffer_capacity
    assert one == (2 + 2) * batch  # the learner's read-ahead (prefetch 2) and two batches more
    assert _plan(tmp_path, learners=2).pools[0].buffer_capacity == one  # already enough for 2
    assert rank_buffer_floor(8, 2, 2) == 15
    four = _plan(tmp_path, learners=4).pools[0]
    assert four.buffer_capacity == max(rank_buffer_floor(batch, 4, 2), one)
