"""The typed Redis records: what one service writes, another reads back field for field, through a real
redis-server; every field name a service reads or increments is a field of its record."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import redis

from impala.control.store import _SET_PAUSED
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import (
    CheckpointRecord,
    Command,
    LearnerStatus,
    PoolStatus,
    RunCounters,
    RunState,
)

SERVICES = Path(__file__).resolve().parents[2] / "services" / "impala"


def test_learner_status_round_trips_through_redis(redis_client: redis.Redis) -> None:
    keys = RunKeys("records")
    written = LearnerStatus(
        heartbeat=1_700_000_000.25,
        learner_step=12,
        env_steps=960,
        env_steps_per_second=3_100.5,
        policy_version=7,
        policy_lag_mean=1.5,
        episode_return_mean=21.0,
        episodes=40,
        paused=True,
        last_checkpoint="/ckpt/ckpt-12.pt",
        last_checkpoint_step=12,
        last_checkpoint_unix=1_700_000_000.0,
        last_command_id="1-0",
        pg_loss=-0.1,
        baseline_loss=0.2,
        entropy_loss=-0.01,
        grad_norm=0.4,
        learning_rate=1e-3,
    )
    redis_client.hset(keys.learner_status, mapping=written.to_hash())  # type: ignore[arg-type]
    assert LearnerStatus.from_hash(redis_client.hgetall(keys.learner_status)) == written  # type: ignore[arg-type]


def test_pool_status_and_counters_round_trip(redis_client: redis.Redis) -> None:
    keys = RunKeys("records")
    pool = PoolStatus(heartbeat=2.0, paused=False, clients=3, env_steps=100, rollouts_produced=9, rollouts_shed=1,
                      policy_version=4, address="10.0.0.1:50051")  # fmt: skip
    redis_client.hset(keys.pool_status("p"), mapping=pool.to_hash())  # type: ignore[arg-type]
    assert PoolStatus.from_hash(redis_client.hgetall(keys.pool_status("p"))) == pool  # type: ignore[arg-type]
    redis_client.hincrby(keys.counters, RunCounters.field("rollouts_shed"), 2)
    redis_client.hincrby(keys.counters, RunCounters.field("rollouts_produced"), 5)
    counters = RunCounters.from_hash(redis_client.hgetall(keys.counters))  # type: ignore[arg-type]
    assert (counters.rollouts_produced, counters.rollouts_shed, counters.rollouts_consumed) == (5, 2, None)


def test_an_unreadable_field_reads_as_none_and_spares_the_rest() -> None:
    status = LearnerStatus.from_hash({b"episodes": b"many", b"env_steps": b"80", b"future_field": b"x"})
    assert status.episodes is None and status.env_steps == 80
    assert math.isnan(LearnerStatus.from_hash({"policy_lag_mean": "nan"}).policy_lag_mean or 0.0)


def test_unknown_field_names_are_refused_where_a_service_names_one() -> None:
    with pytest.raises(KeyError, match="RunCounters has no field 'rollouts_lost'"):
        RunCounters.field("rollouts_lost")


def test_checkpoint_records_and_commands() -> None:
    record = CheckpointRecord(id="a", status="done", path="/c.pt", step=3, bytes=10, created_unix=1.0)
    assert CheckpointRecord.from_json("a", record.to_json()) == record
    broken = CheckpointRecord.from_json("b", b"{not json")
    assert (broken.status, broken.error) == ("failed", "unreadable record in Redis")
    command = Command(cmd="checkpoint", id="a", ts=1.5)
    assert Command.from_fields({k.encode(): str(v).encode() for k, v in command.to_fields().items()}) == command
    assert Command.from_fields({b"id": b"a"}) is None


def test_the_pause_script_writes_run_state_fields(redis_client: redis.Redis) -> None:
    keys = RunKeys("records")
    redis_client.eval(_SET_PAUSED, 1, keys.state, "1", "12.5")
    state = RunState.from_hash(redis_client.hgetall(keys.state))  # type: ignore[arg-type]
    assert state == RunState(paused=True, updated_unix=12.5)
    assert RunState.is_paused(redis_client.hget(keys.state, "paused"))
    assert not RunState.is_paused(None)


def _string_literal_hash_fields(tree: ast.AST) -> list[tuple[str, str]]:
    """(method, field) of every hget/hexists/hincrby call that names its field with a string literal."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("hget", "hexists", "hincrby", "hset")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            found.append((node.func.attr, node.args[1].value))
    return found


def test_no_service_names_a_status_field_outside_its_record() -> None:
    """Field names go through ``Record.field``/``to_hash``, so a rename cannot leave a reader behind."""
    offenders = {
        f"{path.relative_to(SERVICES)}: {method}(…, {name!r})"
        for path in SERVICES.rglob("*.py")
        for method, name in _string_literal_hash_fields(ast.parse(path.read_text()))
    }
    assert not offenders
