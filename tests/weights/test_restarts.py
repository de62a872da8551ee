"""Restarts: the service serves its latest version from Redis, rides out Redis outages, and the
subscriber resubscribes with backoff without losing its place."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import redis

from impala.core.backoff import Backoff
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer
from impala.weights.publisher import WeightPublisher

from .harness import TOKEN, running_service, subscriber, take

KEY = RunKeys("w").weights


async def stored_version(url: str, at_least: int, timeout_s: float = 10.0) -> int:
    """Wait until the mirror wrote ``at_least`` to Redis (it writes in the background)."""
    client = redis.Redis.from_url(url)
    try:
        for _ in range(int(timeout_s / 0.02)):
            raw = client.hget(KEY, "version")
            if raw is not None and int(raw) >= at_least:
                return int(raw)
            await asyncio.sleep(0.02)
    finally:
        client.close()
    raise AssertionError(f"version {at_least} not stored within {timeout_s}s")


async def test_restarted_service_serves_the_latest_from_redis(redis_server: RedisServer) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    async with running_service(redis_server.url) as (service, _):
        pub = WeightPublisher(f"127.0.0.1:{service.port}", token=TOKEN)
        try:
            await asyncio.to_thread(pub.publish, 7, "fp-a", payload)
        finally:
            pub.close()
        assert await stored_version(redis_server.url, 7) == 7

    async with running_service(redis_server.url) as (restarted, registry):
        assert registry.get_sample_value("impala_weights_version") == 7  # loaded before serving
        sub = subscriber(restarted)
        try:
            (update,) = await take(sub, 1)
        finally:
            await sub.close()
        assert (update.version, update.fingerprint, update.payload) == (7, "fp-a", payload)
        pub = WeightPublisher(f"127.0.0.1:{restarted.port}", token=TOKEN)
        try:
            with pytest.raises(Exception, match="stale version 7"):
                await asyncio.to_thread(pub.publish, 7, "fp-a", b"not the stored one")
        finally:
            pub.close()


@pytest.mark.slow
async def test_service_keeps_serving_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path / "redis").start()
    try:
        async with running_service(server.url) as (service, _):
            pub = WeightPublisher(f"127.0.0.1:{service.port}", token=TOKEN)
            sub = subscriber(service)
            try:
                await asyncio.to_thread(pub.publish, 1, "fp-a", b"one")
                await stored_version(server.url, 1)
                server.stop()
                await asyncio.to_thread(pub.publish, 2, "fp-a", b"two")  # accepted: memory is enough
                assert [(u.version, u.payload) for u in await take(sub, 1)] == [(2, b"two")]
                server.start()  # came back empty (no persistence): the mirror writes the latest again
                assert await stored_version(server.url, 2) == 2
            finally:
                pub.close()
                await sub.close()
    finally:
        server.stop()


@pytest.mark.slow
async def test_subscriber_resubscribes_after_the_service_restarts(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        port = service.port
        pub = WeightPublisher(f"127.0.0.1:{port}", token=TOKEN)
        try:
            await asyncio.to_thread(pub.publish, 1, "fp-a", b"one")
        finally:
            pub.close()
        sub = subscriber(service, backoff=Backoff(base_s=0.05, cap_s=0.2))
        updates = sub.updates()
        assert (await anext(updates)).version == 1
        await stored_version(redis_server.url, 1)
    # The service is gone; the subscriber is retrying. Bring it back on the same port.
    pending = asyncio.ensure_future(anext(updates))
    await asyncio.sleep(0.3)
    assert not pending.done()
    try:
        async with running_service(redis_server.url, port=port) as _:
            pub = WeightPublisher(f"127.0.0.1:{port}", token=TOKEN)
            try:
                await asyncio.to_thread(pub.publish, 2, "fp-a", b"two")
            finally:
                pub.close()
            update = await asyncio.wait_for(pending, 10)
            # Version 1 (served again from Redis) is not delivered twice: it resumed after it.
            assert (update.version, update.payload) == (2, b"two")
    finally:
        await updates.aclose()
        await sub.close()
