"""Pause holds replies, backpressure holds replies, many clients with different E, drain."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest

from impala.actorpool.sinks import MemorySink
from tests.actorpool.harness import ScriptedClient, decode, make_step, obs_for, running_pool


async def test_pause_holds_replies_and_resume_releases_them() -> None:
    async with running_pool() as (pool, _sink), grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
        client = ScriptedClient(channel, 2)
        await client.hello()
        await client.step(obs_for(np.zeros(2), np.zeros(2), 2))
        pool.control.pause()
        pending = asyncio.create_task(client.step(obs_for(np.zeros(2), np.ones(2), 2), [1.0, 1.0]))
        await asyncio.sleep(0.3)
        assert not pending.done(), "a paused pool must hold its reply"
        pool.control.resume()
        assert (await asyncio.wait_for(pending, 5)).shape == (2,)
        assert await client.close() == grpc.StatusCode.OK


async def test_full_sink_delays_replies_instead_of_dropping() -> None:
    sink = MemorySink(capacity=1)
    async with running_pool(sink=sink, unroll_length=2) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, 2)  # 2 rollouts per unroll
            await client.hello()
            for t in range(4):  # step 2 stores the first unroll's rollouts: the sink is full from then on
                await client.step(obs_for(np.zeros(2), np.full(2, t), 2), [1.0, 1.0] if t else None)
            # Step 4 completes the second unroll: its rollouts ship before its reply, and they wait.
            blocked = asyncio.create_task(client.step(obs_for(np.zeros(2), np.full(2, 4), 2), [1.0, 1.0]))
            await asyncio.sleep(0.3)
            assert not blocked.done() and len(sink.items) == 2
            taken = await sink.take()
            assert (await asyncio.wait_for(blocked, 5)).shape == (2,)
            taken += await sink.take()
            assert len(taken) == 4 and sink.shed == 0


async def test_rollouts_waiting_for_a_full_sink_survive_the_client_leaving() -> None:
    sink = MemorySink(capacity=1)
    async with running_pool(sink=sink, unroll_length=2) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, 2)
            await client.hello()
            for t in range(4):  # the first unroll's rollouts fill the sink
                await client.step(obs_for(np.zeros(2), np.full(2, t), 2), [1.0, 1.0] if t else None)
            # Step 4 completes the second unroll: its rollouts wait for space (and so does the reply).
            pending = asyncio.create_task(client.step(obs_for(np.zeros(2), np.full(2, 4), 2), [1.0, 1.0]))
            await asyncio.sleep(0.2)
            assert len(sink.items) == 2 and not pending.done()
            client.call.cancel()  # the client leaves while its stream waits on the sink
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await pending
            taken = await sink.take()
            for _ in range(200):  # the waiting rollouts are stored once there is space
                if len(taken) == 6 and not pool.servicer.sessions:
                    break
                taken += await sink.take()
                await asyncio.sleep(0.02)
            assert not pool.servicer.sessions  # the stream ended once its last rollouts were stored
        records = [decode(payload) for payload in taken]
        full = [r for r in records if r.length]
        assert sorted((float(r.observation[0, 1]), r.env_index) for r in full) == [(0, 0), (0, 1), (2, 0), (2, 1)]
        # The stream ended right after a full unroll: each slot's episode (4 steps, ended by the client
        # leaving) travels in an empty rollout (ADR 0018).
        empty = sorted((r.env_index, r.episode_lengths) for r in records if not r.length)
        assert empty == [(0, [4]), (1, [4])]
        assert pool.servicer.pool.stats.rollouts_produced == 6 and pool.servicer.pool.stats.rollouts_shed == 0


@pytest.mark.parametrize("inference", ["inline", "thread"])
async def test_many_clients_with_different_num_envs(inference: str) -> None:
    async with running_pool(unroll_length=4, inference=inference) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:

            async def drive(num_envs: int, steps: int) -> int:
                client = ScriptedClient(channel, num_envs)
                await client.hello()
                for t in range(steps + 1):
                    actions = await client.step(obs_for(np.zeros(num_envs), np.full(num_envs, t), num_envs), None)
                    assert actions.shape == (num_envs,) and set(actions.tolist()) <= {0, 1}
                assert await client.close() == grpc.StatusCode.OK
                return num_envs

            sizes = [1, 3, 8, 16, 1, 5, 32, 2]
            await asyncio.gather(*(drive(n, 9) for n in sizes))
        # 9 transitions at T=4: two full rollouts and one partial of length 1 per env slot
        assert len(sink.items) == 3 * sum(sizes)
        assert pool.servicer.connected == 0


async def test_drain_ships_partials_and_ends_streams_with_unavailable() -> None:
    async with running_pool(unroll_length=50, drain_grace_s=5) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, 3)
            await client.hello()
            for t in range(4):
                await client.step(obs_for(np.zeros(3), np.full(3, t), 3), [1.0] * 3 if t else None)
            drain = asyncio.create_task(pool.drain())
            await asyncio.sleep(0.05)
            # The client's next step arrives during the drain: recorded, not answered.
            await client.send(make_step(obs_for(np.zeros(3), np.full(3, 4), 3), [1.0] * 3))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.call.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await drain
        assert len(sink.items) == 3  # one partial rollout per env slot, nothing lost
