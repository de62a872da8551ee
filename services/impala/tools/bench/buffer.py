"""Rollout buffer throughput: rollouts/s through ``RolloutProducer.put`` → ``RolloutConsumer.read`` →
``ack`` vs bare redis-py ``XADD`` → ``XREADGROUP`` → ``XACK``+``XDEL`` of the same bytes, for
CartPole-size and Atari-size rollouts, on a real redis-server.

The producer runs in its own process (``buffer_producer``), the consumer here, reading B entries per
call and acknowledging them per batch as the learner does; the rate is counted at the consumer.
The raw consumer also deletes what it acknowledged (as ``ack`` does), so both paths keep the stream
short and do the same work in Redis. The two paths alternate over ``ROUNDS`` rounds and each figure is
the median, so a burst of load on the shared cores does not land on one side only."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from impala.buffer.consumer import RolloutConsumer
from impala.core.redis_keys import LEARNER_GROUP, RunKeys
from impala.core.redis_server import RedisServer
from impala.tools.bench.report import Figure
from impala.tools.bench.rollouts import ATARI, CARTPOLE, Shape, payload, size_label

_BUFFER_BYTES = 256_000_000  # capacity in bytes at most: Atari rollouts would need GBs at the default 4096
_DEFAULT_CAPACITY = 4096  # the stream bound of this benchmark: never the limit while it measures
ROUNDS = 3


def capacity_for(size: int) -> int:
    return max(16, min(_DEFAULT_CAPACITY, _BUFFER_BYTES // size))


def _measure(step: Callable[[], int], seconds: float) -> float:
    """Entries/s of ``step`` (one read + ack, returning entries handled) after the first entry and a warm-up."""
    deadline = time.monotonic() + 60
    while step() == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the bench producer wrote nothing within 60 s")
    warm_until = time.monotonic() + min(1.0, seconds / 3)
    while time.monotonic() < warm_until:
        step()
    count, started = 0, time.monotonic()
    while (now := time.monotonic()) < started + seconds:
        count += step()
    return count / (now - started)


def consume_impala(url: str, keys: RunKeys, batch: int, seconds: float) -> float:
    consumer = RolloutConsumer(url, keys, consumer="bench")

    def step() -> int:
        entries = consumer.read(batch, block_ms=1000)
        consumer.ack([entry.id for entry in entries])
        return len(entries)

    try:
        return _measure(step, seconds)
    finally:
        consumer.close()


def consume_raw(url: str, keys: RunKeys, batch: int, seconds: float) -> float:
    client = redis.Redis.from_url(url)
    client.xgroup_create(keys.rollouts, LEARNER_GROUP, id="0", mkstream=True)

    def step() -> int:
        reply: Any = client.xreadgroup(LEARNER_GROUP, "bench", {keys.rollouts: ">"}, count=batch, block=1000)
        ids = [entry_id for entry_id, _fields in reply[0][1]] if reply else []
        if ids:
            pipe = client.pipeline(transaction=False)
            pipe.xack(keys.rollouts, LEARNER_GROUP, *ids)
            pipe.xdel(keys.rollouts, *ids)
            pipe.execute()
        return len(ids)

    try:
        return _measure(step, seconds)
    finally:
        client.close()


def measure(kind: str, url: str, shape: Shape, payload_file: Path, seconds: float) -> float:
    """Rollouts/s of one path (``impala`` or ``raw``) on a fresh stream."""
    keys = RunKeys(f"bench-{uuid.uuid4().hex[:8]}")
    capacity = capacity_for(payload_file.stat().st_size)
    args = [sys.executable, "-m", "impala.tools.bench.buffer_producer", kind, url, keys.run, str(capacity)]
    producer = subprocess.Popen([*args, str(payload_file)])
    try:
        consume = consume_impala if kind == "impala" else consume_raw
        return consume(url, keys, shape.batch_size, seconds)
    finally:
        producer.terminate()
        producer.wait(30)
        with redis.Redis.from_url(url) as client:
            client.delete(keys.rollouts, keys.counters)


def bench_buffer(seconds: float) -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp, RedisServer(workdir=Path(tmp)) as server:
        for shape in (CARTPOLE, ATARI):
            payload_file = Path(tmp) / f"{shape.name}.bin"
            payload_file.write_bytes(payload(shape))
            raw, ours = [], []
            for _ in range(ROUNDS):
                raw.append(measure("raw", server.url, shape, payload_file, seconds / ROUNDS))
                ours.append(measure("impala", server.url, shape, payload_file, seconds / ROUNDS))
            figures.append(
                Figure(
                    f"buffer {shape.name} {size_label(payload_file.stat().st_size)} put→read→ack, B={shape.batch_size}",
                    statistics.median(ours),
                    "rollouts/s",
                    "raw redis-py XADD/XREADGROUP/XACK+XDEL",
                    statistics.median(raw),
                )
            )
    return figures
