"""The learner on a thread against a real redis-server: learn, ack, drop, pause, checkpoint on command."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from prometheus_client import CollectorRegistry

from impala.core.checkpoints import load_checkpoint
from impala.core.redis_keys import LEARNER_GROUP
from impala.core.redis_server import RedisServer
from impala.core.rollouts import from_proto, to_proto
from impala.learner.decode_process import DecodeProcessError
from impala.learner.main import build_learner
from impala.rollout.v1 import rollout_pb2
from tests.support import wait_for

from .harness import (
    KEYS,
    T,
    checkpoint_entry,
    counters,
    learner_settings,
    produce,
    request_checkpoint,
    rollout,
    running,
    sample,
    status,
)


def test_learns_every_rollout_and_frees_the_stream(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    lengths = [T, T, 2, T, 3, T]  # partial rollouts count only their valid steps
    produce(redis_client, [rollout(length=n, returns=(10.0 + i,), seed=i) for i, n in enumerate(lengths)])
    with running(learner_settings(redis_server.url, tmp_path)) as (learner, registry):
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 3)
        wait_for(lambda: redis_client.xlen(KEYS.rollouts), lambda n: n == 0)
        assert redis_client.xpending(KEYS.rollouts, LEARNER_GROUP)["pending"] == 0
        assert learner.loop.state.env_steps == sum(lengths)
        assert sample(registry, "impala_learner_env_steps_total") == sum(lengths)
        assert sample(registry, "impala_learner_rollouts_consumed_total") == 6
        assert sample(registry, "impala_learner_episodes_total") == 6
        assert sample(registry, "impala_learner_episode_return_mean") == sum(10.0 + i for i in range(6)) / 6
        assert sample(registry, "impala_learner_loss", term="total") != 0.0
        assert counters(redis_client)["rollouts_consumed"] == 6
        fields = wait_for(lambda: status(redis_client), lambda s: s.get("learner_step") == "3")
        assert fields["env_steps"] == str(sum(lengths))
        assert fields["paused"] == "0"
        assert float(fields["heartbeat"]) > 0
        # Fresh run: version 1 is the initial parameters, one more per update (publish_interval 1).
        assert fields["policy_version"] == "4"


def test_corrupt_and_stale_rollouts_are_dropped_and_counted(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    record = from_proto(rollout_pb2.Rollout.FromString(rollout()))
    record.observation = record.observation[:, :3]  # 3 features: not CartPole's model
    wrong_shape = to_proto(record).SerializeToString()
    settings = learner_settings(redis_server.url, tmp_path, max_policy_lag=1)
    with running(settings) as (learner, registry):
        produce(redis_client, [b"not a protobuf \xff\xfe", wrong_shape, rollout(version=1), rollout(version=1)])
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 1)
        produce(redis_client, [rollout(version=1), rollout(version=2)])  # learner at version 2: lag 1 allowed
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 2)
        # The learner is at version 3 now: lag 3 - 0 exceeds the limit of 1. The stale rollout's episode
        # still happened: it is counted, though its steps are not learned from.
        produce(redis_client, [rollout(version=0, length=3, returns=(3.0,)), rollout(version=3), rollout(version=3)])
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 3)
        wait_for(lambda: redis_client.xlen(KEYS.rollouts), lambda n: n == 0)
        assert sample(registry, "impala_learner_rollouts_dropped_total", reason="corrupt") == 2
        assert sample(registry, "impala_learner_rollouts_dropped_total", reason="stale") == 1
        assert sample(registry, "impala_learner_episodes_total") == 1
        assert counters(redis_client) == {"rollouts_consumed": 6, "rollouts_dropped": 3}
        assert learner.loop.progress.policy_version == 4


def test_pause_holds_learning_and_resume_continues(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running(learner_settings(redis_server.url, tmp_path)) as (learner, registry):
        produce(redis_client, [rollout(seed=i) for i in range(2)])
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 1)
        redis_client.hset(KEYS.state, "paused", "1")
        wait_for(lambda: status(redis_client).get("paused"), lambda p: p == "1")
        assert sample(registry, "impala_learner_paused") == 1
        produce(redis_client, [rollout(seed=i) for i in range(4)])
        # Learnable rollouts wait in the buffer; several heartbeats later the step has not moved.
        beats = [status(redis_client)["heartbeat"]]
        while len(beats) < 6:
            beats.append(wait_for(lambda: status(redis_client)["heartbeat"], lambda h: h != beats[-1]))
        assert learner.loop.state.learner_steps == 1
        assert status(redis_client)["learner_step"] == "1"
        redis_client.hset(KEYS.state, "paused", "0")
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 3)
        wait_for(lambda: status(redis_client).get("paused"), lambda p: p == "0")
        assert redis_client.xlen(KEYS.rollouts) == 0


def test_checkpoint_command_is_served_with_path_step_and_size(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    request_checkpoint(redis_client, "before-start")  # sent while no learner runs: served once it is up
    with running(learner_settings(redis_server.url, tmp_path)) as (learner, registry):
        first = wait_for(lambda: checkpoint_entry(redis_client, "before-start"), lambda e: e["status"] == "done")
        produce(redis_client, [rollout(seed=i) for i in range(4)])
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 2)
        request_checkpoint(redis_client, "ck-2")
        done = wait_for(lambda: checkpoint_entry(redis_client, "ck-2"), lambda e: e["status"] == "done")
        assert sample(registry, "impala_learner_last_checkpoint_timestamp_seconds") == done["created_unix"]
    assert first["step"] == 0
    assert done["step"] == 2
    assert Path(done["path"]).is_file()
    assert done["bytes"] == Path(done["path"]).stat().st_size
    payload = load_checkpoint(Path(done["path"]))
    assert (payload["learner_steps"], payload["env_steps"], payload["policy_version"]) == (2, 2 * 2 * T, 3)
    assert payload["config"]["run"] == learner.loop.checkpointer.config["run"]
    served = status(redis_client)
    newest: Any = redis_client.xrevrange(KEYS.commands, count=1)
    assert served["last_command_id"] == newest[0][0].decode()
    assert served["last_checkpoint_step"] == "2"  # the final checkpoint on stop is at the same step
    torch.testing.assert_close(payload["model"], learner.loop.state.model.state_dict())


@pytest.mark.slow
def test_rides_out_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path / "redis", appendonly=True).start()
    client = redis.Redis.from_url(server.url)
    try:
        with running(learner_settings(server.url, tmp_path / "ckpt")) as (learner, registry):
            produce(client, [rollout(seed=i) for i in range(2)])
            wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 1)
            server.stop()  # SIGTERM: Redis writes its AOF and exits
            wait_for(lambda: not learner.control.reachable)
            server.start()  # same port, same data
            produce(client, [rollout(seed=i) for i in range(4)])
            wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 3)
            wait_for(lambda: client.xlen(KEYS.rollouts), lambda n: n == 0)
            wait_for(lambda: status(client).get("learner_step"), lambda s: s == "3")
        assert counters(client)["rollouts_consumed"] == 6
    finally:
        client.close()
        server.stop()


def test_a_dead_decode_process_ends_the_learner_with_its_exit_code(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """kill -9 of the decode process: the loop stops with an error naming it (the pod restarts); what
    was acknowledged before stays acknowledged."""
    learner = build_learner(learner_settings(redis_server.url, tmp_path), registry=CollectorRegistry())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            learner.run(threading.Event())
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run, name="learner-under-test")
    thread.start()
    produce(redis_client, [rollout(seed=i) for i in range(2)])
    wait_for(lambda: counters(redis_client).get("rollouts_consumed"), lambda n: n == 2)
    assert learner.prefetcher.pid is not None
    os.kill(learner.prefetcher.pid, signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], DecodeProcessError), errors
    assert "exit code -9" in str(errors[0])
    assert counters(redis_client) == {"rollouts_consumed": 2}
    assert learner.loop.state.learner_steps == 1
