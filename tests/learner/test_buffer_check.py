"""The deadlock of a buffer smaller than a batch is reported, not silent: a real ActorPool process
publishes its buffer_capacity (4) in its heartbeat; the stream holds what that pool lets in; a learner
whose batch needs more logs the error with both numbers and the fix and sets
impala_learner_buffer_too_small, while a learner whose batch fits stays quiet."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from impala.core.pools import live_pools
from impala.core.redis_server import RedisServer, free_port
from tests.support import wait_for

from .harness import HIDDEN, KEYS, T, learner_settings, produce, rollout, running, sample, status

CAPACITY = 4
AFTER_S = 0.3  # the check's waiting period (60 s by default)
GAUGE = "impala_learner_buffer_too_small"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pool(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`impala actorpool` with buffer_capacity 4 and no clients, beating into the learner's run."""
    args = {
        "run": KEYS.run, "redis-url": redis_url, "host": "127.0.0.1", "port": free_port(), "pool-id": "pool-0",
        "buffer-capacity": CAPACITY, "status-interval-s": 0.2, "env": "CartPole-v1", "hidden-size": HIDDEN,
        "unroll-length": T, "log-format": "text",
    }  # fmt: skip
    argv = [sys.executable, "-m", "impala", "actorpool", "--insecure"]
    argv += [item for key, value in args.items() for item in (f"--{key}", str(value))]
    log = tmp_path_factory.mktemp("pool") / "pool.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    client = redis.Redis.from_url(redis_url)
    try:

        def guard() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        wait_for(lambda: live_pools(client, KEYS), timeout_s=120, what="the pool's heartbeat", guard=guard)
        yield
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def stream(redis_url: str, pool: None) -> Iterator[redis.Redis]:
    """The run's stream as the pool would fill it: ``CAPACITY`` rollouts, then no more (backpressure)."""
    client = redis.Redis.from_url(redis_url)
    client.delete(KEYS.rollouts, KEYS.learner_status, KEYS.counters)
    produce(client, [rollout(seed=i) for i in range(CAPACITY)])
    try:
        yield client
    finally:
        client.close()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_a_batch_larger_than_the_pools_buffer_is_reported(
    redis_url: str, stream: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = learner_settings(redis_url, tmp_path / "ckpt", batch_size=8, buffer_check_after_s=AFTER_S)
    with caplog.at_level(logging.ERROR, logger="impala.learner.buffer_check"), running(settings) as (learner, registry):
        wait_for(lambda: sample(registry, GAUGE), lambda v: v == 1, 60, what="the gauge")
        check = learner.loop.buffer_check
        assert check is not None and check.capacity == CAPACITY
        wait_for(lambda: check.looks, lambda n: n >= 3, 30, what="more looks at the pools")
        [message] = errors(caplog)  # once a minute at most, however often it looks
        assert "buffer_capacity (4)" in message and "the 8 rollouts" in message
        assert "raise actorpool.buffer_capacity to at least 8, or lower learner.batch_size" in message
        assert status(stream).get("learner_step", "0") == "0"
        # Enough rollouts after all (a larger pool joined): the learner steps and the gauge clears.
        produce(stream, [rollout(seed=10 + i) for i in range(CAPACITY)])
        wait_for(lambda: status(stream).get("learner_step"), lambda s: s == "1", 60, what="a step")
        wait_for(lambda: sample(registry, GAUGE), lambda v: v == 0, 10, what="the gauge to clear")


@pytest.mark.parametrize("batch_size", [2, CAPACITY])
def test_a_batch_that_fits_the_buffer_is_not_reported(
    redis_url: str, stream: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture, batch_size: int
) -> None:
    settings = learner_settings(redis_url, tmp_path / "ckpt", batch_size=batch_size, buffer_check_after_s=AFTER_S)
    steps = str(CAPACITY // batch_size)
    with caplog.at_level(logging.ERROR, logger="impala.learner.buffer_check"), running(settings) as (learner, registry):
        wait_for(lambda: status(stream).get("learner_step"), lambda s: s == steps, 60, what="every step")
        # Starved now (nothing more is produced): the check looks, finds the pool large enough, says nothing.
        check = learner.loop.buffer_check
        assert check is not None
        wait_for(lambda: check.looks, lambda n: n >= 3, 30, what="looks at the pools")
        assert check.capacity == CAPACITY
        assert sample(registry, GAUGE) == 0
        assert errors(caplog) == []
