"""Two 32-step tasks on a random bit: the optimal policy is obvious, so a learner that fails them is broken.

Observation ``[bit, is_first_step]`` (float32), action ``Discrete(2)``; a new fair bit every step.

- ``ContextualBandit``: reward 1 when the action equals the bit shown *now*. Optimal return 32, chance 16.
  Needs only the policy gradient on the current observation: the first check of any learner default.
- ``OneStepMemory``: reward 1 when the action equals the bit shown *one step earlier* (no reward on the
  first step). Optimal return 31; a memoryless policy gets 15.5 (0.5 per rewarded step). Needs a
  recurrent core that carries the bit across one step.

Episodes end by termination after 32 steps (the horizon is part of the task, so nothing to bootstrap).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

EPISODE_STEPS = 32


class _BitTask(gym.Env[np.ndarray, np.int64]):
    """Shared mechanics: a fresh bit every step, terminated after ``EPISODE_STEPS`` steps."""

    lag = 0  # the reward compares the action with the bit shown this many steps earlier

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._bits: list[int] = []

    def _observe(self) -> np.ndarray:
        self._bits.append(int(self.np_random.integers(2)))
        return np.array([self._bits[-1], float(len(self._bits) == 1)], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._bits = []
        return self._observe(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t = len(self._bits) - 1  # index of the bit the agent just saw
        reward = float(t >= self.lag and int(action) == self._bits[t - self.lag])
        if len(self._bits) == EPISODE_STEPS:
            return np.zeros(2, dtype=np.float32), reward, True, False, {}
        return self._observe(), reward, False, False, {}


class ContextualBandit(_BitTask):
    """Reward 1 when the action equals the bit shown now (module docstring)."""

    lag = 0


class OneStepMemory(_BitTask):
    """Reward 1 when the action equals the bit shown one step earlier (module docstring)."""

    lag = 1
