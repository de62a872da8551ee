"""Where finished rollouts go. The pool awaits ``put``: a sink that is full makes the pool hold its
replies (backpressure), or returns ``False`` when it shed the rollout (counted by the pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol


class RolloutSink(Protocol):
    async def put(self, payload: bytes) -> bool:
        """Store one serialized Rollout; wait while full; False only when the sink shed it."""
        ...

    async def put_many(self, payloads: Sequence[bytes]) -> int:
        """Store several in one go; returns how many were stored (the others were shed)."""
        ...

    async def close(self) -> None: ...


class MemorySink:
    """In-memory sink for tests and benchmarks, with optional capacity (backpressure) and shedding."""

    def __init__(self, capacity: int = 0, *, shed_when_full: bool = False) -> None:
        self.items: list[bytes] = []
        self.capacity = capacity
        self.shed_when_full = shed_when_full
        self.shed = 0
        self._space = asyncio.Condition()

    async def put(self, payload: bytes) -> bool:
        return await self.put_many([payload]) == 1

    async def put_many(self, payloads: Sequence[bytes]) -> int:
        """All or nothing, as ``RolloutProducer.put_many``: wait while full, then store them all (the
        capacity is exceeded by at most one call's rollouts); when shedding, shed them all."""
        async with self._space:
            if self.capacity and len(self.items) >= self.capacity:
                if self.shed_when_full:
                    self.shed += len(payloads)
                    return 0
                await self._space.wait_for(lambda: len(self.items) < self.capacity)
            self.items.extend(payloads)
            return len(payloads)

    async def take(self, count: int | None = None) -> list[bytes]:
        """Remove and return up to ``count`` items (all when None), waking blocked producers."""
        async with self._space:
            n = len(self.items) if count is None else min(count, len(self.items))
            taken, self.items = self.items[:n], self.items[n:]
            self._space.notify_all()
            return taken

    async def close(self) -> None:
        return None
