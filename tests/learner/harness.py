"""Helpers for learner tests: CartPole-shaped rollouts written straight into the run's stream, learner
settings sized for speed, a learner running on a thread, and polling with a generous deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import redis
from prometheus_client import CollectorRegistry

from impala.core.redis_keys import RunKeys
from impala.core.rollouts import RolloutRecord, to_proto
from impala.learner.main import Learner, build_learner
from impala.learner.settings import LearnerSettings
from tests.support import categorical_log_prob

RUN = "lt"
KEYS = RunKeys(RUN)
T = 4  # unroll length of every test rollout
HIDDEN = 8

V = TypeVar("V")


def rollout(*, version: int = 0, length: int = T, returns: tuple[float, ...] = (), seed: int = 0) -> bytes:
    """A serialized CartPole-shaped rollout (obs [T+1, 4] float32, 2 actions) acted by ``version``."""
    rng = np.random.default_rng(seed)
    valid = np.arange(T) < length
    terminated = np.zeros(T, dtype=bool)
    if returns and length > 0:
        terminated[length - 1] = True
    record = RolloutRecord(
        observation=rng.normal(size=(T + 1, 4)).astype(np.float32) * np.r_[valid, True][:, None],
        action=(action := np.where(valid, rng.integers(0, 2, T), 0).astype(np.int64)),
        behaviour_logits=(logits := (rng.normal(size=(T, 2)) * valid[:, None]).astype(np.float32)),
        behaviour_log_prob=categorical_log_prob(logits, action),
        reward=valid.astype(np.float32),
        terminated=terminated,
        truncated=np.zeros(T, dtype=bool),
        bootstrap_value=np.zeros(T, dtype=np.float32),
        mask=valid,
        policy_versions=np.where(valid, version, 0).astype(np.int64),
        length=length,
        episode_returns=list(returns),
        episode_lengths=[length] * len(returns),
        producer_id="test",
    )
    return to_proto(record).SerializeToString()


def produce(client: redis.Redis, payloads: list[bytes]) -> None:
    for payload in payloads:
        client.xadd(KEYS.rollouts, {"r": payload})


def learner_fields(redis_url: str, checkpoint_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Settings of a small, fast test learner, as field name -> value."""
    return {
        "run": RUN,
        "redis_url": redis_url,
        "env": "CartPole-v1",
        "hidden_size": HIDDEN,
        "unroll_length": T,
        "batch_size": 2,
        "device": "cpu",
        "weights_address": "",
        "checkpoint_dir": checkpoint_dir,
        "status_interval_s": 0.1,
        "consumer": "learner-0",
        **overrides,
    }


def learner_settings(redis_url: str, checkpoint_dir: Path, **overrides: Any) -> LearnerSettings:
    fields = learner_fields(redis_url, checkpoint_dir, **overrides)
    return LearnerSettings(**fields)


@contextmanager
def running(settings: LearnerSettings) -> Iterator[tuple[Learner, CollectorRegistry]]:
    """A learner built from ``settings`` training on a thread until the block ends."""
    registry = CollectorRegistry()
    learner = build_learner(settings, registry=registry)
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, args=(stop,), name="learner-under-test")
    thread.start()
    try:
        yield learner, registry
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "learner did not stop"


def status(client: redis.Redis) -> dict[str, str]:
    fields: dict[bytes, bytes] = client.hgetall(KEYS.learner_status)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in fields.items()}


def counters(client: redis.Redis) -> dict[str, int]:
    fields: dict[bytes, bytes] = client.hgetall(KEYS.counters)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in fields.items()}


def request_checkpoint(client: redis.Redis, checkpoint_id: str) -> None:
    """What the control API does: a pending entry, then the command."""
    entry = {
        "id": checkpoint_id,
        "status": "pending",
        "path": "",
        "step": 0,
        "bytes": 0,
        "created_unix": 0,
        "error": "",
    }
    client.hset(KEYS.checkpoints, checkpoint_id, json.dumps(entry))
    client.xadd(KEYS.commands, {"cmd": "checkpoint", "id": checkpoint_id, "ts": str(time.time())})


def checkpoint_entry(client: redis.Redis, checkpoint_id: str) -> dict[str, Any]:
    raw = client.hget(KEYS.checkpoints, checkpoint_id)
    return dict(json.loads(raw)) if raw else {}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
