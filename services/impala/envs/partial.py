"""CartPole with its velocities hidden: a partially observable control task (a memory check at scale).

The observation keeps the cart position x and the pole angle θ of CartPole-v1's ``[x, ẋ, θ, θ̇]``;
dynamics, reward, termination, the 500-step limit and the reward threshold (475) are CartPole-v1's.
A feed-forward policy sees one frame and cannot tell which way the pole is moving; a recurrent core
(``--use-lstm``) can infer both velocities from consecutive frames. This is the "CartPole with
velocities hidden" task of the POMDP literature (e.g. Meng et al. 2021, "Memory-based Deep
Reinforcement Learning for POMDPs").
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

KEPT = (0, 2)  # x and θ of CartPole's [x, ẋ, θ, θ̇]


class CartPoleNoVelocity(gym.ObservationWrapper[np.ndarray, int | np.ndarray, np.ndarray]):
    """CartPole-v1 dynamics observed as ``[x, θ]`` (float32)."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(CartPoleEnv(render_mode=render_mode))
        inner = self.env.observation_space
        assert isinstance(inner, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(inner.low[list(KEPT)], inner.high[list(KEPT)], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)[list(KEPT)]
