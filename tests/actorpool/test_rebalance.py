"""Rebalancing: a pool ends each stream past ``max_connection_age_s`` at a step it records and does not
answer; the client resumes from that step on a new stream (maybe another replica). No env step is lost,
none is counted twice, no episode restarts, and after a scale-out from 1 to 2 pools about half the
streams move within one maximum age."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import numpy as np

from impala.client import ClientSettings, EnvClient, SimulatorBatch
from tests.actorpool.harness import decoded, running_pool
from tests.client.scripted_pool import Counter, eventually

LONG = (10**9,)  # one episode that never ends: any reset would show as a new episode number


async def test_streams_rotate_at_max_age_and_clients_resume_without_losing_a_step() -> None:
    envs = 2
    async with running_pool(unroll_length=10_000, max_connection_age_s=0.2) as (pool, sink):
        batch = SimulatorBatch([Counter(i, LONG, (False,)) for i in range(envs)])
        config = ClientSettings(address=f"127.0.0.1:{pool.port}", backoff_base_s=0.01)
        client = EnvClient(batch, config)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await eventually(lambda: client.stats.resumed >= 3, timeout_s=20)
        stop.set()
        stats = await task
    records = decoded(sink)
    assert stats.failures == 0 and stats.episodes == 0 and stats.streams >= stats.resumed >= 3
    assert pool.metrics.rejected_streams.labels(code="UNAVAILABLE", reason="max_age")._value.get() >= 3
    assert all(r.length < r.unroll_length for r in records)  # every rotated stream shipped partials
    assert sum(r.length for r in records) == stats.env_steps  # each env step learned from exactly once
    for env in range(envs):
        # Counter's observation is [episode, t, last action, env]: the rollouts of one env, in order,
        # continue each other (t advances by one per step, across streams) and stay in episode 0.
        mine = [r for r in records if r.observation[0, 3] == env]
        steps = np.concatenate([r.observation[: r.length + 1, :2] for r in mine])
        assert (steps[:, 0] == 0).all()
        t = steps[:, 1]
        assert t[0] == 0 and t[-1] == stats.env_steps // envs
        # Consecutive rollouts share their boundary observation (T+1 overlap), nothing else repeats.
        assert np.array_equal(np.unique(t), np.arange(t[-1] + 1))


class RoundRobin:
    """A TCP balancer standing in for a Service's kube-proxy (its IPVS `rr` mode): each new connection
    goes to the next backend; backends can be added while it runs."""

    def __init__(self) -> None:
        self.backends: list[int] = []
        self._turn = itertools.count()
        self.port = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[RoundRobin]:
        server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = self.backends[next(self._turn) % len(self.backends)]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def test_scaling_out_moves_about_half_the_streams_within_one_max_age() -> None:
    clients, age = 16, 1.0
    async with (
        running_pool(max_connection_age_s=age) as (first, _),
        running_pool(max_connection_age_s=age) as (second, _),
        RoundRobin().serving() as balancer,
    ):
        balancer.backends.append(first.port)
        stop = asyncio.Event()
        config = ClientSettings(address=f"127.0.0.1:{balancer.port}", backoff_base_s=0.01)
        tasks = [
            asyncio.create_task(EnvClient(SimulatorBatch([Counter(i, LONG, (False,))]), config).run(stop))
            for i in range(clients)
        ]
        await eventually(lambda: first.servicer.connected == clients, timeout_s=20)
        balancer.backends.append(second.port)  # the scale-out: a new replica behind the same address
        await asyncio.sleep(age * 1.1 + 0.3)  # one maximum age (with its jitter) and a reconnect
        moved = second.servicer.connected
        stop.set()
        stats = await asyncio.gather(*tasks)
    assert clients // 2 - 2 <= moved <= clients // 2 + 2, moved
    assert all(s.failures == 0 and s.episodes == 0 for s in stats)
