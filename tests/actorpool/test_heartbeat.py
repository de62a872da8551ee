"""The pool's heartbeat in a real Redis: its status hash says what the learner needs to know about it,
its buffer capacity included (the learner's buffer check reads it)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from impala.actorpool.server import build_actorpool
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.sinks import MemorySink
from impala.core.pools import live_pools
from impala.core.redis_client import sync_client
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer
from tests.actorpool.harness import SPEC, make_policy

KEYS = RunKeys("beat")


async def test_heartbeat_carries_the_buffer_capacity(redis_server: RedisServer) -> None:
    settings = ActorPoolSettings(
        run=KEYS.run, host="127.0.0.1", port=0, insecure=True, buffer_capacity=37, status_interval_s=0.05
    )
    client = aioredis.Redis.from_url(redis_server.url)
    pool = build_actorpool(
        settings,
        policy=make_policy(),
        spec=SPEC,
        sink=MemorySink(),
        redis=client,
        registry=CollectorRegistry(),
        pool_id="pool-0",
    )
    reader = sync_client(redis_server.url)
    try:
        await pool.start()
        for _ in range(200):
            pools = await asyncio.to_thread(live_pools, reader, KEYS)
            if pools:
                break
            await asyncio.sleep(0.05)
        status = pools["pool-0"]
        assert status.buffer_capacity == 37
        assert status.heartbeat is not None and status.paused is False
    finally:
        await pool.stop()
        await client.aclose()
        reader.close()
    assert await asyncio.to_thread(live_pools, reader, KEYS) == {}  # a stopped pool removes itself
