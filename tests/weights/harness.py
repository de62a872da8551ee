"""A weight service on port 0 against the test's redis-server, and helpers to drive it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from impala.weights.server import WeightService, build_weight_service
from impala.weights.settings import WeightsSettings
from impala.weights.subscriber import WeightSubscriber, WeightUpdate

TOKEN = "test-token-0123456789"


@asynccontextmanager
async def running_service(redis_url: str, **overrides: Any) -> AsyncIterator[tuple[WeightService, CollectorRegistry]]:
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "token": TOKEN,
        "redis_url": redis_url,
        "run": "w",
        "drain_grace_s": 0.5,
        **overrides,
    }
    registry = CollectorRegistry()
    service = build_weight_service(WeightsSettings(**fields), registry=registry)
    await service.start()
    try:
        yield service, registry
    finally:
        await service.stop()


def subscriber(service: WeightService, **overrides: Any) -> WeightSubscriber:
    fields: dict[str, Any] = {"token": TOKEN, "fingerprint": "fp-a", **overrides}
    return WeightSubscriber(f"127.0.0.1:{service.port}", **fields)


async def take(sub: WeightSubscriber, n: int, timeout_s: float = 10.0) -> list[WeightUpdate]:
    """The next ``n`` updates of a subscriber (its generator stays open)."""
    out: list[WeightUpdate] = []

    async def collect() -> None:
        async with contextlib.aclosing(sub.updates()) as updates:
            async for update in updates:
                out.append(update)
                if len(out) == n:
                    return

    await asyncio.wait_for(collect(), timeout_s)
    return out
