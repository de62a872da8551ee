"""Playing whole episodes with a policy, as evaluation does (``impala eval`` and the learner's periodic
evaluation): one env, batch of one, recurrent state carried, greedy (most likely action) or sampled.

Episode ``k`` of a call resets the env with seed ``seed + k``, so two evaluations with the same seed
face the same starts and differ only by the policy.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from impala.core.models import Policy


@dataclass(frozen=True)
class EvalResult:
    """Returns and lengths of the evaluated episodes."""

    returns: list[float]
    lengths: list[int]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.returns)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.returns)

    @property
    def mean_length(self) -> float:
        return statistics.fmean(self.lengths)


def run_episodes(model: Policy, env: gym.Env[Any, Any], episodes: int, *, greedy: bool, seed: int) -> EvalResult:
    """Play ``episodes`` full episodes of ``env`` with ``model`` (batch of one, recurrent state carried)."""
    generator = torch.Generator().manual_seed(seed)
    dtype, space = np.dtype(model.spec.observation_dtype), model.spec.actions
    returns: list[float] = []
    lengths: list[int] = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state = model.initial_state(1)
        first, total, steps, over = True, 0.0, 0, False
        while not over:
            obs_t = torch.from_numpy(np.asarray(obs, dtype=dtype)).unsqueeze(0)
            out = model.act(obs_t, torch.tensor([first]), state, greedy=greedy, generator=generator)
            state, first = out.core_state, False
            action = space.clip(out.action.numpy())[0]
            obs, reward, terminated, truncated, _ = env.step(int(action) if space.type == "discrete" else action)
            total += float(reward)
            steps += 1
            over = bool(terminated or truncated)
        returns.append(total)
        lengths.append(steps)
    return EvalResult(returns, lengths)
