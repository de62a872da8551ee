"""Redis with AOF persistence dies (kill -9) under a training stack built from the service CLIs
(``impala local`` runs its redis without persistence) and comes back on the same port and directory:
every service reconnects and none exits, the buffer stays bounded, the accounting holds across it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer, free_port
from tests.support import wait_for

from .accounting import TABLE, Row, read_ledger
from .harness import ENV_ID, Service, start_env_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUN = "faults-redis"
T, BATCH, HIDDEN, ENVS = 20, 16, 64, 8
CAPACITY = 2 * BATCH  # as impala local sizes it
OUTAGE_S = 3.0
KEYS = RunKeys(RUN)


@dataclass
class Stack:
    server: RedisServer
    redis: redis.Redis
    control_url: str
    services: list[Service] = field(default_factory=list)

    def guard(self) -> None:
        dead = {s.name: s.popen.returncode for s in self.services if not s.running()}
        assert not dead, f"services exited: {dead}"

    def hash_int(self, key: str, name: str) -> int:
        try:
            return int(float(self.redis.hget(key, name) or 0))
        except redis.RedisError:
            return 0  # redis is restarting


def _start_services(server: RedisServer, tmp: Path) -> tuple[list[Service], str]:
    """weights, control, learner, one pool and one env client of 8 envs; returns them and the API's URL."""
    common = ["--run", RUN, "--redis-url", server.url, "--log-format", "json"]
    model = ["--env", ENV_ID, "--hidden-size", str(HIDDEN), "--unroll-length", str(T), "--device", "cpu"]
    ports = {name: free_port() for name in ("weights", "control", "pool")}
    weights = f"127.0.0.1:{ports['weights']}"
    specs = {
        "weights": ["weights", *common, "--insecure", "--host", "127.0.0.1", "--port", str(ports["weights"])],
        "control": ["control", *common, "--host", "127.0.0.1", "--port", str(ports["control"]), "--insecure"],
        "learner": ["learner", *common, *model, "--batch-size", str(BATCH), "--learning-rate", "0.003",
                    "--weights-address", weights, "--checkpoint-dir", str(tmp / "checkpoints"),
                    "--consumer", "learner-0", "--status-interval-s", "0.5"],
        "pool": ["actorpool", *common, *model, "--host", "127.0.0.1", "--port", str(ports["pool"]), "--insecure",
                 "--pool-id", "pool-0", "--weights-address", weights, "--buffer-capacity", str(CAPACITY),
                 "--status-interval-s", "0.5"],
    }  # fmt: skip
    services = [Service.start(name, args, tmp / f"{name}.log") for name, args in specs.items()]
    services.append(start_env_client("env", [f"127.0.0.1:{ports['pool']}"], tmp / "env.log", num_envs=ENVS))
    return services, f"http://127.0.0.1:{ports['control']}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    server = RedisServer(workdir=tmp_path / "redis", appendonly=True, log_file=tmp_path / "redis.log").start()
    client = redis.Redis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=0.5)
    services, control_url = _start_services(server, tmp_path)
    built = Stack(server, client, control_url, services)
    try:
        yield built
    finally:
        for service in reversed(services):  # clients first, the learner before the services it uses
            service.stop()
        client.close()
        server.stop()


class DepthSampler(threading.Thread):
    """Reads XLEN every 20 ms on its own connection while Redis answers; keeps the largest value."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.2)
        self.largest, self.samples = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                self.largest = max(self.largest, int(self.client.xlen(KEYS.rollouts)))
                self.samples += 1
            except redis.RedisError:
                continue  # down or loading its AOF


def test_redis_kill9_and_restart_with_aof(stack: Stack) -> None:
    pool, learner = KEYS.pool_status("pool-0"), KEYS.learner_status
    wait_for(lambda: stack.hash_int(learner, "learner_step") >= 10, timeout_s=120, what="learning", guard=stack.guard)
    before = read_ledger(stack.redis, KEYS)
    assert before.lost == 0, before
    step, env_steps = stack.hash_int(learner, "learner_step"), stack.hash_int(pool, "env_steps")
    stored_version = stack.hash_int(KEYS.weights, "version")
    sampler = DepthSampler(stack.server.url)
    sampler.start()
    try:
        stack.server.kill()
        with httpx.Client(base_url=stack.control_url, timeout=10.0) as http:
            assert http.get("/readyz").status_code == 503  # the API says so instead of failing
        time.sleep(OUTAGE_S)  # every service hits the outage and retries with backoff
        stack.guard()
        stack.server.start()
        wait_for(
            lambda: stack.hash_int(learner, "learner_step") >= step + 10,
            timeout_s=120,
            what="learning after the restart",
            guard=stack.guard,
        )
        wait_for(
            lambda: stack.hash_int(pool, "env_steps") >= env_steps + 2000,
            timeout_s=60,
            what="acting after the restart",
            guard=stack.guard,
        )
        # The weight service's Redis mirror reconnected too: it stores versions published after the outage.
        wait_for(
            lambda: stack.hash_int(KEYS.weights, "version") > stored_version + 10,
            timeout_s=60,
            what="weights stored again",
            guard=stack.guard,
        )
        with httpx.Client(base_url=stack.control_url, timeout=10.0) as http:
            assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout_s=30, what="the control API")
            assert http.get("/v1/status").json()["learner_alive"] is True
    finally:
        sampler.done.set()
        sampler.join(5)
    stack.guard()  # nothing crashed, nothing needed a restart
    after = read_ledger(stack.redis, KEYS)
    assert after.lost == 0, after
    assert after.produced > before.produced and after.consumed >= before.consumed  # AOF kept the counters
    # Each env slot ships at most one rollout at a time, so the pools overshoot capacity by at most that.
    assert sampler.largest <= CAPACITY + ENVS, f"buffer grew to {sampler.largest} (capacity {CAPACITY})"
    TABLE.add(
        Row(
            "4 redis kill -9, AOF restart",
            after,
            notes=f"{OUTAGE_S:g} s outage; before: produced {before.produced}, consumed {before.consumed}; "
            f"all 6 processes stayed up; XLEN at most {sampler.largest} (capacity {CAPACITY}) "
            f"over {sampler.samples} samples",
        )
    )
