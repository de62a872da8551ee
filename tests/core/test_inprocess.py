"""The in-process trainer: rollouts obey the record contract, and it really learns CartPole."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from impala.core.inprocess import VectorActor, train_inprocess
from impala.core.models import build_model, spec_for_env
from impala.core.presets import preset, target_return
from impala.core.rollouts import from_proto, to_proto


def test_rollouts_overlap_and_bootstrap_truncations() -> None:
    torch.manual_seed(0)
    E, T, limit = 3, 6, 4  # a 4-step time limit: CartPole cannot fail that fast, so every end is a truncation
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1", max_episode_steps=limit) for _ in range(E)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    actor = VectorActor(build_model(spec_for_env("CartPole-v1")), envs, T, seed=0, device="cpu")
    first, second = actor.unroll(version=5), actor.unroll(version=6)
    envs.close()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.observation[T], b.observation[0])  # the T+1 overlap
        steps = np.concatenate([a.truncated, b.truncated])
        np.testing.assert_array_equal(np.flatnonzero(steps), [3, 7, 11])
        assert not a.terminated.any() and not b.terminated.any()
        bootstrap = np.concatenate([a.bootstrap_value, b.bootstrap_value])
        assert np.all(bootstrap[steps] != 0.0) and np.all(bootstrap[~steps] == 0.0)
        assert a.episode_returns == [4.0] and b.episode_returns == [4.0, 4.0]
        assert (a.policy_version, b.policy_version) == (5, 6)
        # The same records survive the wire validation the learner applies.
        back = from_proto(to_proto(a), unroll_length=T)
        np.testing.assert_array_equal(back.bootstrap_value, a.bootstrap_value)


def test_short_run_accounts_steps_and_episodes() -> None:
    result = train_inprocess("CartPole-v1", seed=1, num_envs=4, max_env_steps=2_000, unroll_length=10, batch_size=4)
    assert result.env_steps == 2_000 and result.learner_steps == 50
    assert result.episodes > 0 and all(r >= 1 for r in result.episode_returns)
    assert not result.solved and result.seconds > 0


@pytest.mark.slow
def test_learns_cartpole_to_its_target() -> None:
    """A real learning test: mean return ≥ 475 over the last 100 episodes, with the CartPole preset."""
    target = target_return("CartPole-v1")
    assert target == 475.0
    result = train_inprocess("CartPole-v1", seed=0, max_env_steps=1_000_000, target_return=target)
    assert result.solved, f"mean return {result.mean_return_100:.1f} after {result.env_steps} env steps"
    assert result.mean_return_100 >= 475.0 and result.episodes >= 100
    assert preset("CartPole-v1").num_envs > 0
