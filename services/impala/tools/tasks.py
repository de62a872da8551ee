"""Small tasks with a known answer, for learning tests and benchmarks of kinds CartPole does not cover.

``OneStepMemory``: each step shows a random bit (observation ``[+1]`` or ``[-1]``, float32 ``[1]``); the
action (Discrete(2)) earns +1 when it equals the bit shown ONE STEP EARLIER (0 at an episode's first
step, where no bit was shown before), else 0. The current observation alone is worth 0.5 per step in
expectation; a policy with memory reaches 1.0. Episodes last ``length`` steps and end truncated (a time
limit). Importing this module registers it as ``impala/OneStepMemory-v0`` (length 20), so
``--env impala.tools.tasks:impala/OneStepMemory-v0`` works wherever an env id does.

``MemorySimulator`` is the same task as a plain class with no Gymnasium base, what an env author
without Gymnasium would write (``observation_space``/``action_space`` from ``impala.client.spaces``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

ENV_ID = "impala/OneStepMemory-v0"
LENGTH = 20
SPEC = {"observation": {"shape": [1], "dtype": "float32"}, "action": {"type": "discrete", "n": 2}}


class _Memory:
    """The task's state machine, shared by the Gymnasium env and the plain simulator."""

    def __init__(self, length: int, seed: int | None) -> None:
        self.length, self.rng = length, np.random.default_rng(seed)
        self.previous, self.bit, self.t = 0, 0, 0

    def reset(self) -> npt.NDArray[np.float32]:
        self.previous, self.bit, self.t = 0, int(self.rng.integers(2)), 0
        return self.obs()

    def obs(self) -> npt.NDArray[np.float32]:
        return np.array([2.0 * self.bit - 1.0], np.float32)

    def step(self, action: int) -> tuple[npt.NDArray[np.float32], float, bool]:
        reward = float(int(action) == self.previous)
        self.previous, self.bit, self.t = self.bit, int(self.rng.integers(2)), self.t + 1
        return self.obs(), reward, self.t >= self.length


class OneStepMemoryEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """The task as a Gymnasium env (module docstring)."""

    def __init__(self, length: int = LENGTH) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._task = _Memory(length, None)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._task.rng = np.random.default_rng(seed)
        return self._task.reset(), {}

    def step(self, action: np.int64) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        obs, reward, over = self._task.step(int(action))
        return obs, reward, False, over, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=OneStepMemoryEnv)  # type: ignore[arg-type]  # a class is a creator
