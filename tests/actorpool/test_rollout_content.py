"""Rollout contents against a scripted deterministic environment: alignment, T+1 overlap, masks,
terminated vs truncated vs disconnect bootstrapping, reset-by-reconnect."""

from __future__ import annotations

import grpc
import numpy as np
import torch

from impala.actorpool.server import ActorPool
from impala.core.models import ActOutput
from tests.actorpool.harness import ScriptedClient, decoded, obs_for, running_pool

T = 5


def act_on(pool: ActorPool, obs: np.ndarray) -> ActOutput:
    """The acting model's output for ``obs`` ([N, 4]), computed independently of the pool."""
    with torch.no_grad():
        return pool.policy.model.act(
            torch.from_numpy(obs.astype(np.float32)), torch.zeros(len(obs), dtype=torch.bool), ()
        )


def values_of(pool: ActorPool, obs: np.ndarray) -> np.ndarray:
    return act_on(pool, obs).baseline.numpy()


def logits_of(pool: ActorPool, obs: np.ndarray) -> np.ndarray:
    return act_on(pool, obs).logits.numpy()


async def test_full_and_partial_rollouts_are_aligned_and_masked() -> None:
    E, steps = 2, 12  # 12 transitions = two full rollouts of T=5 and a partial one of 2
    async with running_pool(unroll_length=T) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            welcome = await client.hello()
            assert welcome.unroll_length == T and welcome.policy_version == 3
            sent_obs, actions = [], []
            for t in range(steps + 1):
                obs = obs_for(np.zeros(E), np.full(E, t), E)
                reward = [10.0 * t + i for i in range(E)]  # reward of the transition (t-1) -> t
                actions.append(await client.step(obs, reward if t else None))
                sent_obs.append(obs)
            assert await client.close() == grpc.StatusCode.OK
        records = decoded(sink)
    assert len(records) == 3 * E
    by_env = {i: [r for r in records if r.env_index == i] for i in range(E)}
    for i, rollouts in by_env.items():
        full1, full2, partial = rollouts
        assert [r.length for r in rollouts] == [T, T, 2]
        for k, r in enumerate((full1, full2)):
            start = k * T
            np.testing.assert_array_equal(r.observation[:, 2], i)  # env column
            np.testing.assert_array_equal(r.observation[:, 1], np.arange(start, start + T + 1))  # obs t .. t+T
            np.testing.assert_array_equal(r.action, [actions[start + t][i] for t in range(T)])
            np.testing.assert_allclose(r.reward, [10.0 * (start + t + 1) + i for t in range(T)])
            assert r.mask.all() and not r.truncated.any() and not r.terminated.any()
            np.testing.assert_array_equal(r.policy_versions, 3)
            np.testing.assert_allclose(
                r.behaviour_logits, logits_of(pool, np.stack([sent_obs[start + t][i] for t in range(T)])), rtol=1e-5
            )
        np.testing.assert_array_equal(full1.observation[T], full2.observation[0])  # the T+1 overlap
        # The disconnect is a truncation at the last observation (step 12), bootstrapped from V(obs 12).
        assert partial.mask.tolist() == [True, True, False, False, False]
        np.testing.assert_array_equal(partial.observation[:3, 1], [10, 11, 12])
        assert not partial.observation[3:].any() and not partial.reward[2:].any()
        assert partial.truncated.tolist() == [False, True, False, False, False]
        np.testing.assert_allclose(partial.bootstrap_value[1], values_of(pool, sent_obs[12][i : i + 1])[0], rtol=1e-5)
        assert partial.bootstrap_value[0] == 0 and not partial.bootstrap_value[2:].any()


async def test_terminated_cuts_and_truncated_bootstraps_from_final_observation() -> None:
    E = 2
    async with running_pool(unroll_length=T) as (pool, sink):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, E)
            await client.hello()
            await client.step(obs_for(np.zeros(E), np.zeros(E), E))
            await client.step(obs_for(np.zeros(E), np.ones(E), E), [1.0, 1.0])
            # Transition 1 -> 2: env 0 terminates, env 1 is truncated; both auto-reset to episode 1.
            final = obs_for(np.zeros(E), np.full(E, 2), E)
            final[:, 3] = 7.0  # mark the final observations
            await client.step(
                obs_for(np.ones(E), np.zeros(E), E), [1.0, 1.0], [True, False], [False, True], final=final
            )
            for t in range(1, 4):
                await client.step(obs_for(np.ones(E), np.full(E, t), E), [1.0, 1.0])
            await client.close()
        shipped = decoded(sink)
    records = {r.env_index: r for r in shipped if r.length}
    r0, r1 = records[0], records[1]
    assert r0.length == T and r1.length == T
    # The stream closed right after the full rollout: the episodes it cut (3 steps each) ship in empty rollouts.
    assert sorted((r.env_index, r.episode_lengths) for r in shipped if not r.length) == [(0, [3]), (1, [3])]
    assert r0.terminated.tolist() == [False, True, False, False, False]
    assert not r0.truncated.any() and not r0.bootstrap_value.any()
    assert r1.truncated.tolist() == [False, True, False, False, False]
    np.testing.assert_allclose(r1.bootstrap_value[1], values_of(pool, final[1:2])[0], rtol=1e-5)
    np.testing.assert_array_equal(r0.observation[2], obs_for(np.ones(E), np.zeros(E), E)[0])  # reset obs follows
    assert r0.episode_returns == [2.0] and r0.episode_lengths == [2]
    assert r1.episode_returns == [2.0] and r1.episode_lengths == [2]


async def test_reset_by_reconnect_ships_each_episode_as_truncated_or_terminated() -> None:
    async with running_pool(unroll_length=T) as (pool, sink):
        for episode, (length, terminal) in enumerate([(3, False), (7, True)]):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
                client = ScriptedClient(channel, 1)
                await client.hello()
                await client.step(obs_for(np.full(1, episode), np.zeros(1), 1))
                for t in range(1, length + 1):
                    last = t == length
                    await client.step(
                        obs_for(np.full(1, episode + (1 if last and terminal else 0)), np.full(1, t), 1),
                        [1.0],
                        [last and terminal],
                        [False],
                        final=obs_for(np.full(1, episode), np.full(1, t), 1) if last and terminal else None,
                    )
                assert await client.close() == grpc.StatusCode.OK
        records = decoded(sink)
    lengths = [r.length for r in records]
    assert lengths == [3, 5, 2]
    first, second_full, second_tail = records
    assert first.truncated.tolist() == [False, False, True, False, False]  # closing = truncation
    assert first.episode_returns == [3.0]
    assert not second_full.truncated.any() and not second_full.terminated.any()
    assert second_tail.terminated.tolist() == [False, True, False, False, False]
    assert not second_tail.truncated.any()  # already terminated: the disconnect adds nothing
    assert second_tail.episode_returns == [7.0] and second_tail.episode_lengths == [7]
