"""Backends give same-step auto-reset: the reset observation in place, the last one in final_observation."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from impala.client import EnvBatch, GymnasiumBatch, make_batch
from impala.core.env_spec import ActionSpace

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None
X_LIMIT, THETA_LIMIT, RESET_RANGE = 2.4, 12 * 2 * np.pi / 360, 0.05


def run_until_every_env_ended(batch: EnvBatch, steps: int = 200) -> int:
    """Push right on CartPole; check each step's rows against the termination bounds."""
    obs = batch.reset()
    assert np.abs(obs).max() <= RESET_RANGE
    seen = np.zeros(batch.num_envs, np.bool_)
    for _ in range(steps):
        result = batch.step(np.ones(batch.num_envs, np.int64))
        ended = result.ended
        out_of_bounds = (np.abs(result.observation[:, 0]) > X_LIMIT) | (np.abs(result.observation[:, 2]) > THETA_LIMIT)
        assert not out_of_bounds.any()  # an ended env already shows its next episode's first observation
        if ended.any():
            assert result.final_observation is not None
            assert len(result.final_observation) == ended.sum()
            final = result.final_observation
            assert ((np.abs(final[:, 0]) > X_LIMIT) | (np.abs(final[:, 2]) > THETA_LIMIT)).all()
            assert np.abs(result.observation[ended]).max() <= RESET_RANGE
            assert result.terminated[ended].all()
            assert not result.truncated.any()
        else:
            assert result.final_observation is None
        seen |= ended
        if seen.all():
            return batch.num_envs
    raise AssertionError("not every env terminated")


def test_gymnasium_same_step_autoreset() -> None:
    batch = GymnasiumBatch("CartPole-v1", num_envs=3, seed=1)
    try:
        assert (batch.num_envs, batch.num_actions) == (3, 2)
        run_until_every_env_ended(batch)
    finally:
        batch.close()


def test_gymnasium_factory_truncation_carries_final_observation() -> None:
    batch = GymnasiumBatch(lambda: gym.make("CartPole-v1", max_episode_steps=3), num_envs=2, seed=0)
    try:
        batch.reset()
        results = [batch.step(np.array([t % 2, (t + 1) % 2])) for t in range(3)]
    finally:
        batch.close()
    assert not any(r.ended.any() for r in results[:2])
    last = results[2]
    assert last.truncated.tolist() == [True, True]
    assert not last.terminated.any()
    assert last.final_observation is not None
    assert last.final_observation.shape == (2, 4)
    assert not np.array_equal(last.final_observation, last.observation)
    assert last.reward.dtype == np.float32


def test_gymnasium_seeds_are_reproducible() -> None:
    a, b = GymnasiumBatch("CartPole-v1", 2, seed=5), GymnasiumBatch("CartPole-v1", 2, seed=5)
    try:
        first_a, first_b = a.reset(), b.reset()
        assert np.array_equal(first_a, first_b)
        assert not np.array_equal(first_a[0], first_a[1])
        assert not np.array_equal(a.reset(), first_a)  # later resets continue the RNG
    finally:
        a.close()
        b.close()


class _TupleActions(gym.Env[np.ndarray, tuple[int, int]]):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))


def test_box_actions_step_the_env_and_other_spaces_are_refused() -> None:
    batch = GymnasiumBatch("Pendulum-v1", 2)
    try:
        assert batch.action_space == ActionSpace.box([1], [-2.0], [2.0])
        batch.reset()
        result = batch.step(np.array([[1.5], [-2.0]], np.float32))
        assert result.observation.shape == (2, 3) and np.isfinite(result.reward).all()
    finally:
        batch.close()
    with pytest.raises(ValueError, match="Discrete, MultiDiscrete or Box"):
        GymnasiumBatch(_TupleActions, 1)
    with pytest.raises(ValueError, match="unknown backend"):
        make_batch("nope", "CartPole-v1", 1)


@pytest.mark.skipif(HAS_ENVPOOL, reason="envpool is installed")
def test_envpool_backend_says_how_to_install() -> None:
    with pytest.raises(ImportError, match="pip install envpool"):
        make_batch("envpool", "CartPole-v1", 2)


@pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed (optional backend)")
def test_envpool_same_step_autoreset() -> None:
    batch = make_batch("envpool", "CartPole-v1", 4, seed=0)
    try:
        assert (batch.num_envs, batch.num_actions) == (4, 2)
        run_until_every_env_ended(batch)
    finally:
        batch.close()
