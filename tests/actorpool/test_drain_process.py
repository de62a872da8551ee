"""Real processes and signals: SIGTERM on a pool under traffic ships every partial rollout to Redis
and its client reconnects to the second pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer, free_port
from impala.core.rollouts import from_proto
from impala.rollout.v1 import rollout_pb2
from tests.support import wait_for

T = 10_000  # no rollout fills before the drain: each env slot must ship a partial one
pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        env = {**os.environ, "IMPALA_LOG_FORMAT": "text"}
        proc = subprocess.Popen([sys.executable, "-m", "impala", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        started.append(proc)
        return proc

    start.started = started  # type: ignore[attr-defined]
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_partials_and_client_moves_to_second_pool(
    redis_server: RedisServer, redis_client: redis.Redis, procs: Callable[..., subprocess.Popen[bytes]]
) -> None:
    keys = RunKeys("drain")
    ports = [free_port(), free_port()]
    pools = [
        procs(
            f"pool-{i}",
            "actorpool",
            "--run",
            "drain",
            "--redis-url",
            redis_server.url,
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--pool-id",
            f"pool-{i}",
            "--unroll-length",
            str(T),
            "--drain-grace-s",
            "5",
            "--status-interval-s",
            "0.2",
        )
        for i, port in enumerate(ports)
    ]

    def clients(pool_id: str) -> int:
        value = redis_client.hget(keys.pool_status(pool_id), "clients")
        return int(value or 0)

    wait_for(lambda: redis_client.zcard(keys.pools) == 2, timeout_s=60, what="both pools to report")
    targets = ",".join(f"127.0.0.1:{p}" for p in ports)
    procs("env", "env", "--address", f"ipv4:{targets}", "--num-envs", "4", "--backoff-max-s", "1")
    wait_for(lambda: clients("pool-0") == 1, timeout_s=60, what="the client on pool-0")
    wait_for(
        lambda: int(redis_client.hget(keys.pool_status("pool-0"), "env_steps") or 0) > 100, timeout_s=60, what="traffic"
    )

    pools[0].send_signal(signal.SIGTERM)
    assert pools[0].wait(30) == 0
    wait_for(lambda: clients("pool-1") == 1, timeout_s=30, what="the client to reconnect to pool-1")
    wait_for(
        lambda: int(redis_client.hget(keys.pool_status("pool-1"), "env_steps") or 0) > 100,
        timeout_s=60,
        what="pool-1 traffic",
    )

    env_proc, second = procs.started[-1], pools[1]  # type: ignore[attr-defined]
    env_proc.send_signal(signal.SIGTERM)
    assert env_proc.wait(30) == 0
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    records = read_all(redis_client, keys)
    from_first = [r for r in records if r.producer_id == "pool-0"]
    partials = [r for r in from_first if r.length < T]
    assert len(partials) == len(from_first) == 4, "one partial rollout per env slot of the drained stream"
    for r in partials:
        assert r.mask.sum() == r.length
        assert r.truncated[r.length - 1] or r.terminated[r.length - 1]
    produced = int(redis_client.hget(keys.counters, "rollouts_produced") or 0)
    assert produced == redis_client.xlen(keys.rollouts) == len(records)  # nothing consumed, nothing lost


def read_all(client: redis.Redis, keys: RunKeys) -> list:  # type: ignore[type-arg]
    return [from_proto(rollout_pb2.Rollout.FromString(f[b"r"])) for _, f in client.xrange(keys.rollouts)]
