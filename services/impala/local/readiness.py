"""When is the local stack up? Every gRPC/HTTP port accepts connections and the learner has
written its status heartbeat to Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import redis

from impala.core.redis_keys import RunKeys
from impala.core.redis_records import LearnerStatus
from impala.local.plan import HOST, Plan

POLL_S = 0.2


def port_open(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def learner_reporting(client: redis.Redis, keys: RunKeys) -> bool:
    """True once the learner's status hash has a heartbeat."""
    try:
        return bool(client.hexists(keys.learner_status, LearnerStatus.field("heartbeat")))
    except redis.RedisError:
        return False


def not_ready(plan: Plan, client: redis.Redis) -> list[str]:
    """Names of the services of ``plan`` that are not up yet."""
    ports = {"weights": plan.weights.port, "control": plan.control.port}
    ports.update({f"actorpool-{i}": pool.port for i, pool in enumerate(plan.pools)})
    waiting = [name for name, port in ports.items() if not port_open(port)]
    if not learner_reporting(client, RunKeys(plan.run)):
        waiting.append("learner")
    return waiting


def wait_until_up(plan: Plan, stop: threading.Event, timeout_s: float, tick: Callable[[], None]) -> list[str]:
    """Poll until everything is up ([]), ``stop`` is set or ``timeout_s`` passes (the names still down).

    ``tick`` runs every poll, so crashed services are restarted while we wait.
    """
    client = redis.Redis.from_url(plan.redis_url, socket_timeout=2.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            tick()
            waiting = not_ready(plan, client)
            if not waiting:
                return []
            if stop.wait(POLL_S) or time.monotonic() > deadline:
                return waiting
    finally:
        client.close()
