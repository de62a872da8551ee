"""Recurrent models: the pool keeps the core state per env slot, resets it where an episode starts,
and records each rollout's initial state."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest

from tests.actorpool.harness import SPEC, ScriptedClient, decoded, obs_for, running_pool

LSTM_SPEC = dataclasses.replace(SPEC, use_lstm=True)
T = 3


@pytest.mark.parametrize("inference", ["inline", "thread"])
async def test_core_state_is_kept_per_slot_reset_at_episode_start_and_recorded(inference: str) -> None:
    E = 2
    async with running_pool(spec=LSTM_SPEC, unroll_length=T, inference=inference) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            await client.hello()
            await client.step(obs_for(np.zeros(E), np.zeros(E), E))
            for t in range(1, T):
                await client.step(obs_for(np.zeros(E), np.full(E, t), E), [1.0, 1.0])
            # Transition T-1 -> T ends env 0's episode (terminated); obs[T] of env 0 starts a new one.
            await client.step(
                obs_for(np.array([1.0, 0.0]), np.array([0.0, T]), E),
                [1.0, 1.0],
                [True, False],
                [False, False],
                final=obs_for(np.zeros(1), np.full(1, T), 1),
            )
            for t in range(1, 3):
                await client.step(obs_for(np.array([1.0, 0.0]), np.array([t, T + t]), E), [1.0, 1.0])
            await client.close()
        records = decoded(sink)
    first = {r.env_index: r for r in records if r.length == T}
    later = {r.env_index: r for r in records if r.length < T}
    hidden = LSTM_SPEC.hidden_size
    for r in records:
        assert len(r.initial_core_state) == 2  # (h, c) of the LSTM
        assert all(s.shape[-1] == hidden for s in r.initial_core_state)
    # The first rollouts start at the streams' first observations: zero state.
    assert all(not np.any(s) for r in first.values() for s in r.initial_core_state)
    # The second rollouts start at obs[T]: env 0 begins a new episode there (state reset to zero),
    # env 1 carries the state it built over T steps.
    assert all(not np.any(s) for s in later[0].initial_core_state)
    assert any(np.any(s) for s in later[1].initial_core_state)
