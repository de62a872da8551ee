"""``EnvBatch`` backends for registered environments: Gymnasium (always) and envpool (when installed).

Both are adapted to same-step auto-reset, which is what the wire protocol needs: Gymnasium through
``AutoresetMode.SAME_STEP`` (its ``final_obs`` info key holds the last observations), envpool, which
only resets on the next step, by resetting the ended envs explicitly right after the step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from impala.client.simulator import Array, BatchStep, EnvBatch
from impala.core.env_spec import action_offset, action_space_of
from impala.core.envs import make_env

BACKENDS = ("gymnasium", "envpool")


class GymnasiumBatch:
    """E Gymnasium envs in a ``SyncVectorEnv`` with same-step auto-reset.

    Args:
        env: a registered id such as ``"CartPole-v1"``, or a factory returning a ``gym.Env``.
        num_envs: E.
        seed: env i is seeded ``seed + i`` at the first reset; later resets continue their RNGs.
    """

    def __init__(self, env: str | Callable[[], gym.Env[Any, Any]], num_envs: int, seed: int = 0) -> None:
        mode = gym.vector.AutoresetMode.SAME_STEP
        # An id goes through impala.core.envs.make_env: the same preprocessing (Atari) as the model spec.
        factory = functools.partial(make_env, env) if isinstance(env, str) else env
        self.envs: gym.vector.VectorEnv[Any, Any, Any] = gym.vector.SyncVectorEnv(
            [factory] * num_envs, autoreset_mode=mode
        )
        self.num_envs = num_envs
        self.action_space = action_space_of(self.envs.single_action_space, name=str(env))
        self.num_actions = self.action_space.num_actions
        self._start = action_offset(self.envs.single_action_space)
        self._seed: int | None = seed

    def reset(self) -> Array:
        obs, _ = self.envs.reset(seed=self._seed)
        self._seed = None
        return np.asarray(obs)

    def step(self, actions: Array) -> BatchStep:
        obs, reward, terminated, truncated, info = self.envs.step(actions + self._start)
        terminated, truncated = np.asarray(terminated, np.bool_), np.asarray(truncated, np.bool_)
        ended = terminated | truncated
        # SAME_STEP keeps the old episode's last observation in an object array (None where not ended).
        final = np.stack(list(info["final_obs"][ended])) if ended.any() else None
        return BatchStep(np.asarray(obs), np.asarray(reward, np.float32), terminated, truncated, final)

    def close(self) -> None:
        self.envs.close()


class EnvpoolBatch:
    """E envpool envs (C++ threads), adapted from envpool's next-step reset to same-step reset."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0) -> None:
        try:
            import envpool  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ImportError("backend 'envpool' needs the envpool package: pip install envpool") from None
        self.envs: Any = envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed)
        self.num_envs = num_envs
        self.action_space = action_space_of(self.envs.action_space, name=env_id)
        self.num_actions = self.action_space.num_actions
        self._start = action_offset(self.envs.action_space)

    def reset(self) -> Array:
        obs, info = self.envs.reset()
        return self._ordered(obs, info)

    def step(self, actions: Array) -> BatchStep:
        obs, reward, terminated, truncated, info = self.envs.step(actions + self._start)
        order = np.argsort(info["env_id"])
        obs = np.array(obs)[order]
        terminated = np.asarray(terminated, np.bool_)[order]
        truncated = np.asarray(truncated, np.bool_)[order]
        ended = np.flatnonzero(terminated | truncated)
        final = None
        if len(ended):
            final = obs[ended].copy()
            # Reset now so observation[i] is the next episode's first; envpool then steps it normally.
            reset_obs, reset_info = self.envs.reset(ended.astype(np.int32))
            obs[np.asarray(reset_info["env_id"])] = reset_obs
        return BatchStep(obs, np.asarray(reward, np.float32)[order], terminated, truncated, final)

    @staticmethod
    def _ordered(obs: Any, info: dict[str, Any]) -> Array:
        return np.array(obs)[np.argsort(info["env_id"])]

    def close(self) -> None:
        self.envs.close()


def make_batch(backend: str, env: str, num_envs: int, seed: int = 0) -> EnvBatch:
    """The ``EnvBatch`` for ``impala env --backend B --env ID --num-envs E``."""
    if backend == "gymnasium":
        return GymnasiumBatch(env, num_envs, seed)
    if backend == "envpool":
        return EnvpoolBatch(env, num_envs, seed)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
