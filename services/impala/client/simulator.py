"""What the client steps: one ``Simulator`` per env, batched into an ``EnvBatch`` of E envs.

The wire protocol auto-resets in the same step (Gymnasium's ``AutoresetMode.SAME_STEP``): when env i's
episode ends, the batch returns the first observation of its next episode in ``observation[i]`` and
the last observation of the old one in ``final_observation``. Every backend (custom simulators,
Gymnasium, envpool) is adapted to that one shape here or in ``backends``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


@runtime_checkable
class Simulator(Protocol):
    """A custom single environment with a discrete action space.

    ``num_actions`` is the size of the action space; actions are ``0 .. num_actions-1``.
    ``reset()`` starts an episode and returns its first observation (a numpy array whose dtype and
    shape match the pool's model, e.g. float32[4]). ``step(action)`` returns
    ``(observation, reward, terminated, truncated)``; after either flag the client calls ``reset()``.
    """

    num_actions: int

    def reset(self) -> Array: ...

    def step(self, action: int) -> tuple[Array, float, bool, bool]: ...


@dataclass(frozen=True)
class BatchStep:
    """The result of one step of E envs, auto-reset in the same step.

    ``observation`` [E, *obs]: for an env whose episode ended, already its next episode's first one.
    ``final_observation`` [K, *obs] in env order, K = count(terminated | truncated); None when K = 0.
    """

    observation: Array
    reward: npt.NDArray[np.float32]
    terminated: npt.NDArray[np.bool_]
    truncated: npt.NDArray[np.bool_]
    final_observation: Array | None

    @property
    def ended(self) -> npt.NDArray[np.bool_]:
        """Envs whose episode ended in this step."""
        return self.terminated | self.truncated


class EnvBatch(Protocol):
    """E envs stepped in lockstep with same-step auto-reset (what one client stream carries)."""

    num_envs: int
    num_actions: int

    def reset(self) -> Array:
        """Reset every env; returns observations [E, *obs]."""
        ...

    def step(self, actions: npt.NDArray[np.int64]) -> BatchStep:
        """Apply one action per env ([E] int64, values in 0..num_actions-1)."""
        ...

    def close(self) -> None:
        """Release the envs."""
        ...


class SimulatorBatch:
    """An ``EnvBatch`` over custom ``Simulator`` objects, stepped one after another in this thread.

    Args:
        simulators: one per env (E = len), or a factory and ``num_envs``.
        observation_dtype: cast observations to this dtype (e.g. float32) when the simulator returns
            another one; None keeps what ``reset()`` returns.
    """

    def __init__(
        self,
        simulators: Sequence[Simulator] | Callable[[], Simulator],
        num_envs: int = 1,
        *,
        observation_dtype: npt.DTypeLike | None = None,
    ) -> None:
        sims = [simulators() for _ in range(num_envs)] if callable(simulators) else list(simulators)
        if not sims:
            raise ValueError("SimulatorBatch needs at least one simulator")
        counts = {int(s.num_actions) for s in sims}
        if len(counts) != 1 or min(counts) < 1:
            raise ValueError(f"every simulator must have the same num_actions >= 1, got {sorted(counts)}")
        self.simulators = sims
        self.num_envs = len(sims)
        self.num_actions = counts.pop()
        self._dtype = None if observation_dtype is None else np.dtype(observation_dtype)

    def _obs(self, observations: Sequence[Array]) -> Array:
        batch = np.stack([np.asarray(o) for o in observations])
        return batch if self._dtype is None else batch.astype(self._dtype, copy=False)

    def reset(self) -> Array:
        return self._obs([s.reset() for s in self.simulators])

    def step(self, actions: npt.NDArray[np.int64]) -> BatchStep:
        observations: list[Array] = []
        finals: list[Array] = []
        reward = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        for i, (sim, action) in enumerate(zip(self.simulators, actions.tolist(), strict=True)):
            obs, reward[i], terminated[i], truncated[i] = sim.step(int(action))
            if terminated[i] or truncated[i]:
                finals.append(obs)
                obs = sim.reset()
            observations.append(obs)
        return BatchStep(self._obs(observations), reward, terminated, truncated, self._obs(finals) if finals else None)

    def close(self) -> None:
        for sim in self.simulators:
            close = getattr(sim, "close", None)
            if callable(close):
                close()
