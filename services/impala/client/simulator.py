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

from impala.core.env_spec import ActionSpace, action_offset, action_space_of

Array = npt.NDArray[Any]


@runtime_checkable
class Simulator(Protocol):
    """A custom single environment: a plain class, no Gymnasium base needed.

    Its action space is ``action_space`` (a Gymnasium ``Discrete``, ``MultiDiscrete`` or ``Box``, or an
    ``impala.core.env_spec.ActionSpace``) or, for a discrete one, just ``num_actions`` (actions
    ``0 .. num_actions-1``). ``reset()`` starts an episode and returns its first observation (a numpy
    array whose dtype and shape match the pool's model, e.g. float32[4]; with an ``observation_space``
    observations are cast to its dtype). ``step(action)`` gets an ``int`` (discrete), an int64 ``[K]``
    array (multi-discrete) or a float32 array of the box's shape, within its bounds, and returns
    ``(observation, reward, terminated, truncated)``; after either flag the client calls ``reset()``.
    """

    def reset(self) -> Array: ...

    def step(self, action: Any) -> tuple[Array, float, bool, bool]: ...


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
    """E envs stepped in lockstep with same-step auto-reset (what one client stream carries). Its action
    space is ``action_space`` (an ``ActionSpace``), or ``num_actions`` for a discrete one (``action_space``
    reads either)."""

    num_envs: int

    def reset(self) -> Array:
        """Reset every env; returns observations [E, *obs]."""
        ...

    def step(self, actions: Array) -> BatchStep:
        """Apply one action per env ([E, *action shape], 0-based for discrete spaces)."""
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
        spaces = {_simulator_space(s) for s in sims}
        if len(spaces) != 1:
            raise ValueError(f"every simulator must have the same action space, got {sorted(map(str, spaces))}")
        self.simulators = sims
        self.num_envs = len(sims)
        self.action_space = spaces.pop()
        self.num_actions = self.action_space.num_actions
        self._offset = action_offset(getattr(sims[0], "action_space", None))
        if observation_dtype is None and hasattr(sims[0], "observation_space"):
            observation_dtype = sims[0].observation_space.dtype
        self._dtype = None if observation_dtype is None else np.dtype(observation_dtype)

    def _obs(self, observations: Sequence[Array]) -> Array:
        batch = np.stack([np.asarray(o) for o in observations])
        return batch if self._dtype is None else batch.astype(self._dtype, copy=False)

    def reset(self) -> Array:
        return self._obs([s.reset() for s in self.simulators])

    def step(self, actions: Array) -> BatchStep:
        observations: list[Array] = []
        finals: list[Array] = []
        reward = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        discrete = self.action_space.type == "discrete"
        for i, (sim, action) in enumerate(zip(self.simulators, actions + self._offset, strict=True)):
            obs, reward[i], terminated[i], truncated[i] = sim.step(int(action) if discrete else action)
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


def action_space(batch: Any) -> ActionSpace:
    """An ``EnvBatch``'s action space: its ``action_space``, else ``Discrete(num_actions)``."""
    space = getattr(batch, "action_space", None)
    return action_space_of(space) if space is not None else ActionSpace.discrete(int(batch.num_actions))


def _simulator_space(sim: Any) -> ActionSpace:
    if getattr(sim, "action_space", None) is not None:
        return action_space_of(sim.action_space, name=type(sim).__name__)
    if not isinstance(getattr(sim, "num_actions", None), int) or sim.num_actions < 1:
        raise ValueError(f"{type(sim).__name__} needs an action_space, or num_actions >= 1 for discrete actions")
    return ActionSpace.discrete(sim.num_actions)
