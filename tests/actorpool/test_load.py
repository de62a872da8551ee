"""Load: 256 concurrent env streams against one pool process for a bounded time. All are served,
none starves; p50/p99 action latency and the pool's memory are reported (not asserted: machines are
noisy)."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core import tensors
from impala.tools.bench.ingress import start_server
from tests.actorpool.harness import rss_mib

pytestmark = pytest.mark.slow
STREAMS, SECONDS = 256, 5.0


class Start:
    """Every stream measures the same window, opened once all of them hold their Welcome (so a stream
    whose handshake finished late on a slow machine is not counted as starved)."""

    def __init__(self, streams: int) -> None:
        self.waiting, self.opened, self.until = streams, asyncio.Event(), 0.0

    async def welcomed(self) -> float:
        self.waiting -= 1
        if self.waiting == 0:
            self.until = time.monotonic() + SECONDS
            self.opened.set()
        await self.opened.wait()
        return self.until


async def one_stream(port: int, start: Start, latencies: list[float]) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = actorpool_pb2_grpc.ActorPoolStub(channel).Connect()
        hello = actorpool_pb2.Hello(
            client_name="load",
            num_envs=1,
            observation_spec=tensors.spec(np.float32, (4,)),
            num_actions=2,
            protocol_version=1,
        )
        await call.write(actorpool_pb2.EnvMessage(hello=hello))
        await call.read()
        until = await start.welcomed()
        step = actorpool_pb2.EnvMessage(
            step=actorpool_pb2.Step(
                observation=tensors.encode(np.zeros((1, 4), np.float32)),
                reward=[0.0],
                terminated=[False],
                truncated=[False],
            )
        )
        steps = 0
        while time.monotonic() < until:
            sent = time.perf_counter()
            await call.write(step)
            reply = await call.read()
            latencies.append(time.perf_counter() - sent)
            assert reply.WhichOneof("kind") == "actions"
            steps += 1
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
        return steps


def test_256_concurrent_streams_are_all_served() -> None:
    proc, port = start_server("pool", "cartpole")
    try:
        rss_idle = rss_mib(proc.pid)
        latencies: list[float] = []

        async def run() -> list[int]:
            start = Start(STREAMS)
            return await asyncio.gather(*(one_stream(port, start, latencies) for _ in range(STREAMS)))

        steps = asyncio.run(run())
        rss_loaded = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    assert len(steps) == STREAMS
    assert min(steps) > 0, "a stream was starved"
    assert min(steps) >= 0.2 * (sum(steps) / STREAMS), f"unfair service: min {min(steps)}, mean {sum(steps) / STREAMS}"
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    print(
        f"\nload: {STREAMS} streams × {SECONDS:.0f}s: {sum(steps)} steps ({sum(steps) / SECONDS:.0f}/s), "
        f"per stream min {min(steps)} max {max(steps)}; action latency p50 {p50:.1f} ms p99 {p99:.1f} ms; "
        f"pool RSS {rss_idle:.0f} -> {rss_loaded:.0f} MiB"
    )
