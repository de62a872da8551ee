"""Dynamic batching of inference requests from all client streams (torchbeast's DynamicBatcher idea).

Requests queue on the event loop; one runner task takes them into a batch until the batch is full,
every connected stream has a request in it, or neither a pass of the loop brought a new one nor is
there time left of ``timeout_s`` since the first one (docs/adr/0012-inline-acting.md).

The forward pass runs either on the loop itself (``inline``: no GIL hand-offs, the loop's work and the
model's never compete; best for small models on CPU) or on a dedicated thread (the loop keeps reading
streams meanwhile: for a GPU, whose forward pass waits on the device); the thread hands each result
back with one ``call_soon_threadsafe`` per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from impala.actorpool.metrics import PoolMetrics
from impala.actorpool.policy import ActResult, PolicyHolder

log = logging.getLogger(__name__)

State = tuple[npt.NDArray[np.float32], ...]


@dataclass
class _Request:
    obs: npt.NDArray[np.generic]
    done: npt.NDArray[np.bool_]
    state: State
    future: asyncio.Future[ActResult] = field(repr=False)

    @property
    def rows(self) -> int:
        return int(self.obs.shape[0])


class DynamicBatcher:
    def __init__(
        self,
        policy: PolicyHolder,
        *,
        max_batch_size: int,
        timeout_s: float,
        metrics: PoolMetrics,
        inline: bool = True,
    ) -> None:
        self.policy = policy
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.metrics = metrics
        # Streams that could add to a batch; the servicer sets it (one stream until then).
        self.waiting_streams: Callable[[], int] = lambda: 1
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._carry: _Request | None = None
        self._executor = None if inline else ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self._obs_buf: npt.NDArray[np.generic] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def infer(self, obs: npt.NDArray[np.generic], done: npt.NDArray[np.bool_], state: State) -> ActResult:
        """Queue ``obs`` ([N, *obs]) for the next batch and wait for its rows of the result."""
        future: asyncio.Future[ActResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(obs, done, state, future))
        return await future

    async def _next_batch(self) -> list[_Request]:
        """Take what is queued (up to the batch size), and more while passes of the loop bring more:
        requests whose messages have already arrived join, and a lone request waits one pass only.
        When fewer streams than are connected have a request in, wait up to ``timeout_s`` (since the
        first request) for the rest."""
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.timeout_s
        grew = True
        while rows < self.max_batch_size:
            if self._queue.empty():
                if len(batch) >= self.waiting_streams():
                    break
                if grew:  # one more pass of the loop: reads that are ready now queue their requests
                    grew = False
                    await asyncio.sleep(0)
                    continue
                if (left := deadline - time.monotonic()) <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        nxt = await self._queue.get()
                except TimeoutError:
                    break
            else:
                nxt = self._queue.get_nowait()
            grew = True
            if rows + nxt.rows > self.max_batch_size:
                self._carry = nxt
                break
            batch.append(nxt)
            rows += nxt.rows
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [r for r in batch if not r.future.done()]
            if not live:
                continue
            obs, done, state = self._collate(live)
            if self._executor is None:
                self._answer(live, self._forward(obs, done, state))
                continue
            # The inference thread answers the whole batch with one call_soon_threadsafe (one loop
            # wake-up per batch); ``free`` resolves in the same callback, so the next batch forms then.
            free: asyncio.Future[None] = loop.create_future()
            self._executor.submit(self._act, loop, live, free, obs, done, state)
            await free

    def _act(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Request],
        free: asyncio.Future[None],
        obs: npt.NDArray[np.generic],
        done: npt.NDArray[np.bool_],
        state: State,
    ) -> None:
        """On the inference thread: the forward pass, then one hand-off of its outcome to the loop."""
        outcome = self._forward(obs, done, state)

        def hand_back() -> None:
            self._answer(batch, outcome)
            if not free.done():
                free.set_result(None)

        loop.call_soon_threadsafe(hand_back)

    def _forward(
        self, obs: npt.NDArray[np.generic], done: npt.NDArray[np.bool_], state: State
    ) -> tuple[ActResult, bool, float] | Exception:
        """The forward pass: (result, weights swapped, seconds), or the error it raised."""
        started = time.perf_counter()
        try:
            result, swapped = self.policy.act(obs, done, state)
        except Exception as err:  # a model failure must not hang every client: each stream ends INTERNAL
            log.error("inference failed for a batch", extra={"rows": int(obs.shape[0]), "error": repr(err)})
            return err
        return result, swapped, time.perf_counter() - started

    def _answer(self, batch: list[_Request], outcome: tuple[ActResult, bool, float] | Exception) -> None:
        """On the loop: each request gets its rows of the result (or the error), and the metrics."""
        if isinstance(outcome, Exception):
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(outcome)
            return
        result, swapped, seconds = outcome
        self.metrics.inference_latency.observe(seconds)
        self.metrics.inference_batch_size.observe(result.action.shape[0])
        if swapped:
            self.metrics.weight_updates.inc()
            self.metrics.policy_version.set(result.version)
        self._scatter(batch, result)

    def _collate(self, batch: list[_Request]) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_], State]:
        # Always copy into the reused buffer: message views are read-only and torch wants writable memory.
        rows = sum(r.rows for r in batch)
        first = batch[0].obs
        if self._obs_buf is None or self._obs_buf.shape[0] < rows or self._obs_buf.dtype != first.dtype:
            self._obs_buf = np.empty((max(rows, self.max_batch_size), *first.shape[1:]), dtype=first.dtype)
        obs = self._obs_buf[:rows]
        np.concatenate([r.obs for r in batch], axis=0, out=obs)
        done = np.concatenate([r.done for r in batch])
        state = tuple(np.concatenate(parts) for parts in zip(*(r.state for r in batch), strict=True))
        return obs, done, state

    @staticmethod
    def _scatter(batch: list[_Request], result: ActResult) -> None:
        start = 0
        for request in batch:
            end = start + request.rows
            if not request.future.done():
                request.future.set_result(
                    ActResult(
                        action=result.action[start:end],
                        logits=result.logits[start:end],
                        log_prob=result.log_prob[start:end],
                        baseline=result.baseline[start:end],
                        state=tuple(s[start:end] for s in result.state),
                        version=result.version,
                    )
                )
            start = end
