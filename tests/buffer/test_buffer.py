"""Producer and consumer against a real redis-server: delivery, memory, backpressure, shedding."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry

from impala.buffer.consumer import Entry, RolloutConsumer
from impala.buffer.producer import RolloutProducer
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer

KEYS = RunKeys("t")


@pytest.fixture
def consumer(redis_server: RedisServer) -> Iterator[RolloutConsumer]:
    c = RolloutConsumer(redis_server.url, KEYS, consumer="learner-0", claim_idle_s=30.0)
    yield c
    c.close()


def counters(client: redis.Redis) -> dict[str, int]:
    return {str(k, "utf-8") if isinstance(k, bytes) else k: int(v) for k, v in client.hgetall(KEYS.counters).items()}


def drain(consumer: RolloutConsumer, expected: int) -> list[Entry]:
    """Read and ack until ``expected`` entries arrived (blocking reads, so no busy loop)."""
    got: list[Entry] = []
    while len(got) < expected:
        batch = consumer.read(8, block_ms=2000)
        assert batch, f"no entry within 2 s after {len(got)} of {expected}"
        consumer.ack([e.id for e in batch])
        got += batch
    return got


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def test_produce_consume_ack_frees_memory(
    redis_server: RedisServer, redis_client: redis.Redis, consumer: RolloutConsumer
) -> None:
    registry = CollectorRegistry()
    producer = RolloutProducer(redis_server.url, KEYS, capacity=100, producer_id="pool-0", registry=registry)
    consumer.read(1, block_ms=1)  # creates the group before anything is produced
    before = used_memory(redis_client)
    payloads = [bytes([i]) * 200_000 for i in range(20)]
    try:
        for p in payloads:
            assert await producer.put(p)
        assert await producer.depth() == 20
        assert registry.get_sample_value("impala_buffer_depth_rollouts") == 20
        assert registry.get_sample_value("impala_buffer_capacity_rollouts") == 100
    finally:
        await producer.close()
    assert used_memory(redis_client) - before > 0.9 * sum(map(len, payloads))
    assert (redis_client.memory_usage(KEYS.rollouts) or 0) > sum(map(len, payloads))

    batch = consumer.read(32, block_ms=100)
    assert [e.payload for e in batch] == payloads  # stream order, bytes intact
    assert consumer.pending() == 20  # read but not acked: still held by Redis
    assert consumer.ack([e.id for e in batch]) == 20
    assert consumer.ack([e.id for e in batch]) == 0  # a second ack counts nothing

    assert redis_client.xlen(KEYS.rollouts) == 0
    assert consumer.pending() == 0
    assert (redis_client.memory_usage(KEYS.rollouts) or 0) < 0.01 * sum(map(len, payloads))
    # What remains of used_memory is connection buffers and the group, not the payloads.
    assert used_memory(redis_client) - before < 0.1 * sum(map(len, payloads))
    assert counters(redis_client) == {"rollouts_produced": 20, "rollouts_consumed": 20}


async def test_backpressure_holds_then_delivers_everything(
    redis_server: RedisServer, redis_client: redis.Redis, consumer: RolloutConsumer
) -> None:
    waits: list[float] = []
    producer = RolloutProducer(redis_server.url, KEYS, capacity=5, on_wait=waits.append, poll_s=0.005)
    payloads = [f"rollout-{i}".encode() for i in range(30)]

    async def produce() -> None:
        for p in payloads:
            assert await producer.put(p)

    task = asyncio.create_task(produce())
    try:
        for _ in range(500):
            if producer.produced >= 5:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a producer without backpressure would have written all 30 by now
        assert not task.done()
        assert producer.produced == 5
        assert redis_client.xlen(KEYS.rollouts) == 5

        got = await asyncio.to_thread(drain, consumer, len(payloads))
        await task
    finally:
        task.cancel()
        await producer.close()
    assert [e.payload for e in got] == payloads
    assert waits
    assert sum(waits) > 0
    assert counters(redis_client) == {"rollouts_produced": 30, "rollouts_consumed": 30}


async def test_shed_mode_counts_and_logs_every_shed_rollout(
    redis_server: RedisServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    producer = RolloutProducer(redis_server.url, KEYS, capacity=3, shed_when_full=True, producer_id="pool-1")
    try:
        with caplog.at_level(logging.WARNING, logger="impala.buffer.producer"):
            accepted = [await producer.put(b"x" * 10) for _ in range(10)]
    finally:
        await producer.close()
    assert accepted == [True] * 3 + [False] * 7
    assert (producer.produced, producer.shed) == (3, 7)
    assert counters(redis_client) == {"rollouts_produced": 3, "rollouts_shed": 7}
    assert [r.getMessage() for r in caplog.records].count("rollout shed: buffer full") == 7
    assert redis_client.xlen(KEYS.rollouts) == 3


def test_drop_counts_and_deletes(redis_client: redis.Redis, consumer: RolloutConsumer) -> None:
    for i in range(4):
        redis_client.xadd(KEYS.rollouts, {"r": b"%d" % i})
    batch = consumer.read(4, block_ms=100)
    assert consumer.drop([batch[0].id, batch[1].id], reason="stale") == 2
    assert consumer.ack([e.id for e in batch[2:]]) == 2
    assert redis_client.xlen(KEYS.rollouts) == 0
    assert counters(redis_client) == {"rollouts_dropped": 2, "rollouts_consumed": 2}


def test_same_name_restart_rereads_own_pending_at_once(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    for i in range(6):
        redis_client.xadd(KEYS.rollouts, {"r": b"%d" % i})
    first = RolloutConsumer(redis_server.url, KEYS, consumer="learner-0", claim_idle_s=3600)
    held = first.read(4, block_ms=100)
    first.close()  # "crashed" before acking; its entries stay pending under its name

    second = RolloutConsumer(redis_server.url, KEYS, consumer="learner-0", claim_idle_s=3600)
    try:
        again = second.read(4, block_ms=100)
        assert again == held  # not waiting for claim_idle_s: the name is ours
        rest = second.read(4, block_ms=100)
        assert [e.payload for e in rest] == [b"4", b"5"]
    finally:
        second.close()


def test_own_held_entries_are_not_reclaimed_by_autoclaim(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """A paused learner holds entries longer than claim_idle_s; its own XAUTOCLAIM must not redeliver them."""
    for i in range(3):
        redis_client.xadd(KEYS.rollouts, {"r": b"%d" % i})
    c = RolloutConsumer(redis_server.url, KEYS, consumer="learner-0", claim_idle_s=0.01)
    try:
        held = c.read(3, block_ms=100)
        assert len(held) == 3
        time.sleep(0.05)  # idle past claim_idle_s, and past the next claim scan time
        assert c.read(3, block_ms=10) == []
        assert c.ack([e.id for e in held]) == 3
    finally:
        c.close()


def test_entries_held_by_a_live_rank_are_not_reclaimed_by_another(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Learner ranks share the group: one that holds a batch while its peers wait keeps its entries fresh
    (``keep_held``), so a peer's XAUTOCLAIM does not take them and learn them twice; once it stops doing
    so (it died), they are reclaimed."""
    for i in range(2):
        redis_client.xadd(KEYS.rollouts, {"r": b"%d" % i})
    holder = RolloutConsumer(redis_server.url, KEYS, consumer="lt-r1", claim_idle_s=0.3)
    peer = RolloutConsumer(redis_server.url, KEYS, consumer="lt-r0", claim_idle_s=0.3)
    try:
        held = holder.read(2, block_ms=100)
        assert len(held) == 2
        deadline = time.monotonic() + 1.0  # more than three idle periods
        while time.monotonic() < deadline:
            holder.keep_held()
            assert peer.read(2, block_ms=20) == []
        time.sleep(0.4)  # the holder stopped keeping them: as if it died
        assert sorted(e.id for e in peer.read(2, block_ms=20)) == sorted(e.id for e in held)
    finally:
        holder.close()
        peer.close()
