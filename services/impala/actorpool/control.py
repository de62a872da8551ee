"""The pool's side of the control plane: the run's pause flag and the status heartbeat in Redis.

While paused, sessions hold their replies (clients simply wait) and resume later; nothing is lost.
Without Redis (tests, benchmarks) the pool runs with a local flag that ``pause``/``resume`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from impala.core.redis_keys import RunKeys
from impala.core.redis_records import PoolStatus, RunState

log = logging.getLogger(__name__)

STATUS_TTL_S = 30
POLL_S = 0.2


class PoolControl:
    def __init__(
        self,
        *,
        redis: aioredis.Redis | None,
        keys: RunKeys,
        pool_id: str,
        status_interval_s: float = 1.0,
        on_pause_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.redis, self.keys, self.pool_id = redis, keys, pool_id
        self.status_interval_s = status_interval_s
        # Fields of the heartbeat besides heartbeat/paused; the pool sets it once assembled.
        self.status: Callable[[], PoolStatus] = PoolStatus
        self._on_change = on_pause_change
        self._running = asyncio.Event()
        self._running.set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def wait_running(self) -> None:
        if not self._running.is_set():
            await self._running.wait()

    def pause(self) -> None:
        self._set(True)

    def resume(self) -> None:
        self._set(False)

    def _set(self, paused: bool) -> None:
        if paused == self.paused:
            return
        if paused:
            self._running.clear()
        else:
            self._running.set()
        log.info("run paused" if paused else "run resumed", extra={"pool": self.pool_id})
        if self._on_change:
            self._on_change(paused)

    def start(self) -> None:
        if self.redis is not None:
            self._tasks = [
                asyncio.create_task(self._poll_pause(), name="pause-poll"),
                asyncio.create_task(self._heartbeat(), name="heartbeat"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.zrem(self.keys.pools, self.pool_id)
                await self.redis.delete(self.keys.pool_status(self.pool_id))

    async def _poll_pause(self) -> None:
        assert self.redis is not None
        failing = False
        while True:
            try:
                self._set(RunState.is_paused(await self.redis.hget(self.keys.state, RunState.field("paused"))))
                failing = False
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as err:
                if not failing:  # one line per outage, keep the last known state meanwhile
                    log.warning("cannot read pause flag; keeping last state", extra={"error": str(err)})
                failing = True
            await asyncio.sleep(POLL_S)

    async def _heartbeat(self) -> None:
        assert self.redis is not None
        while True:
            now = time.time()
            fields: dict[Any, Any] = (
                self.status().model_copy(update={"heartbeat": now, "paused": self.paused}).to_hash()
            )
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(self.keys.pool_status(self.pool_id), mapping=fields)
                    pipe.expire(self.keys.pool_status(self.pool_id), STATUS_TTL_S)
                    pipe.zadd(self.keys.pools, {self.pool_id: now})
                    await pipe.execute()
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                pass  # the pause poller logs outages
            await asyncio.sleep(self.status_interval_s)
