"""MinAtar games (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
Reinforcement Learning Experiments", arXiv:1903.03176) as image observations for the CNN.

MinAtar's ``[10, 10, C]`` bool frames (one channel per object kind) become ``[C, 10, 10]`` float32 of
0/1 (float, not uint8: the model scales uint8 by 1/255, which would shrink a bit to 1/255). The game
keeps MinAtar's defaults (sticky actions with probability 0.1, difficulty ramping) and its minimal
action set (``MinAtar/<Game>-v1``). Episodes are truncated at 10,000 steps so an evaluation always
ends; the pool bootstraps the truncation. Needs the optional ``minatar`` package
(``pip install 'impala-rl[minatar]'``).
"""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np

from impala.core.errors import UserError

MAX_EPISODE_STEPS = 10_000


class MinAtarFrames(gym.ObservationWrapper[np.ndarray, int, np.ndarray]):
    """A MinAtar game with ``[C, 10, 10]`` float32 observations."""

    def __init__(self, game: str, render_mode: str | None = None) -> None:
        try:
            minatar_gym = importlib.import_module("minatar.gym")
        except ImportError:
            raise UserError("MinAtar games need the minatar extra: pip install 'impala-rl[minatar]'") from None
        super().__init__(minatar_gym.BaseEnv(game, render_mode=render_mode, use_minimal_action_set=True))
        height, width, channels = self.env.observation_space.shape or (10, 10, 1)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(channels, height, width), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.float32)
