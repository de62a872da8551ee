"""Faults with real processes: a learner killed with SIGKILL, a Redis restart under load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from impala.buffer.consumer import Entry, RolloutConsumer
from impala.buffer.producer import RolloutProducer
from impala.core.backoff import Backoff
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer

KEYS = RunKeys("faults")

# A learner that reads entries, reports them, and hangs before its optimizer step (never acks).
_DOOMED_LEARNER = """
import sys, time
from impala.buffer.consumer import RolloutConsumer
from impala.core.redis_keys import RunKeys
c = RolloutConsumer(sys.argv[1], RunKeys("faults"), consumer="learner-a", claim_idle_s=30)
got = []
while len(got) < 5:
    got += c.read(5 - len(got), block_ms=1000)
print(" ".join(e.payload.decode() for e in got), flush=True)
time.sleep(600)
"""


async def _produce(url: str, payloads: list[bytes], backoff: Backoff | None = None) -> None:
    producer = RolloutProducer(url, KEYS, capacity=10_000, backoff=backoff)
    try:
        for p in payloads:
            assert await producer.put(p)
    finally:
        await producer.close()


def _drain(consumer: RolloutConsumer, expected: int) -> list[Entry]:
    got: list[Entry] = []
    for _ in range(200):
        if len(got) >= expected:
            break
        batch = consumer.read(8, block_ms=50)
        consumer.ack([e.id for e in batch])
        got += batch
    return got


def _counters(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {
            str(k, "utf-8") if isinstance(k, bytes) else k: int(v) for k, v in client.hgetall(KEYS.counters).items()
        }
    finally:
        client.close()


@pytest.mark.slow
def test_killed_learner_pending_entries_are_reclaimed(redis_server: RedisServer) -> None:
    payloads = [b"%d" % i for i in range(20)]
    asyncio.run(_produce(redis_server.url, payloads))
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_LEARNER, redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert doomed.stdout is not None
        held = doomed.stdout.readline().split()
        assert held == ["0", "1", "2", "3", "4"]
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()

    successor = RolloutConsumer(redis_server.url, KEYS, consumer="learner-b", claim_idle_s=0.2)
    try:
        assert successor.pending() == 5  # the dead learner's entries survived it
        got = _drain(successor, len(payloads))
        assert successor.pending() == 0
        assert successor.depth() == 0
    finally:
        successor.close()
    assert sorted(e.payload for e in got) == sorted(payloads)  # every rollout once, none lost
    assert _counters(redis_server.url) == {"rollouts_produced": 20, "rollouts_consumed": 20}


@pytest.mark.slow
async def test_producer_and_consumer_ride_out_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path / "redis", appendonly=True).start()
    fast = Backoff(base_s=0.02, cap_s=0.2)
    consumer = RolloutConsumer(server.url, KEYS, consumer="learner-0", claim_idle_s=30, backoff=fast)
    try:
        await _produce(server.url, [b"a%d" % i for i in range(10)])
        held = consumer.read(4, block_ms=100)
        server.stop()  # SIGTERM: Redis writes its AOF and exits

        later = [b"b%d" % i for i in range(10)]
        producing = asyncio.create_task(_produce(server.url, later, Backoff(base_s=0.02, cap_s=0.2)))
        acking = asyncio.create_task(asyncio.to_thread(consumer.ack, [e.id for e in held]))
        await asyncio.sleep(0.3)
        assert not producing.done()
        assert not acking.done()

        server.start()  # same port, same AOF
        await asyncio.wait_for(producing, 10)
        assert await asyncio.wait_for(acking, 10) == 4
        rest = await asyncio.to_thread(_drain, consumer, 16)
        assert sorted(e.payload for e in [*held, *rest]) == sorted([b"a%d" % i for i in range(10)] + later)
        assert _counters(server.url) == {"rollouts_produced": 20, "rollouts_consumed": 20}
    finally:
        consumer.close()
        server.stop()
