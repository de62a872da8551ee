"""The run's environment spec: one env's observation (dtype, shape) and action space, declared in a file.

A pool and a learner build their model from it, so a simulator never has to exist as a Python package
on the server side (docs/bring-your-own-env.md). The file is JSON or YAML; names mirror Gymnasium's
space constructors::

    {"observation": {"shape": [2], "dtype": "float32"},
     "action": {"type": "box", "shape": [1], "low": [-1.0], "high": [1.0]}}

``action.type`` is ``discrete`` (``n``), ``multi_discrete`` (a 1-D ``nvec``) or ``box`` (``shape``,
``low``, ``high``: prod(shape) values each in C order, ``null`` for an unbounded side). A Gymnasium id is
a shortcut that derives the same spec (``from_spaces``). Torch-free: env clients use it too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impala.actorpool.v1 import actorpool_pb2

OBSERVATION_DTYPES = ("bool", "uint8", "int8", "int32", "int64", "float16", "float32", "float64")
ACTION_TYPES = ("discrete", "multi_discrete", "box")


class EnvSpecError(ValueError):
    """A spec file or space that cannot describe a run's environment."""


@dataclass(frozen=True)
class ActionSpace:
    """One env's action space. Use the ``discrete``, ``multi_discrete`` and ``box`` constructors."""

    type: str  # "discrete" | "multi_discrete" | "box"
    n: int = 0  # discrete
    nvec: tuple[int, ...] = ()  # multi_discrete, each >= 1
    shape: tuple[int, ...] = ()  # box
    low: tuple[float, ...] = ()  # box, prod(shape) values, -inf for unbounded
    high: tuple[float, ...] = ()  # box, prod(shape) values, +inf for unbounded

    def __post_init__(self) -> None:
        if self.type == "discrete":
            if self.n < 1:
                raise EnvSpecError(f"a discrete action space needs n >= 1, got {self.n}")
        elif self.type == "multi_discrete":
            if not self.nvec or min(self.nvec) < 1:
                raise EnvSpecError(
                    f"a multi_discrete action space needs a non-empty nvec of values >= 1, got {list(self.nvec)}"
                )
        elif self.type == "box":
            size = math.prod(self.shape)
            if not self.shape or size < 1 or min(self.shape) < 1:
                raise EnvSpecError(f"a box action space needs a shape of positive sizes, got {list(self.shape)}")
            if len(self.low) != size or len(self.high) != size:
                raise EnvSpecError(
                    f"a box of shape {list(self.shape)} needs {size} low and high values, got {len(self.low)} and {len(self.high)}"
                )
            if any(math.isnan(v) for v in (*self.low, *self.high)) or any(
                lo >= hi for lo, hi in zip(self.low, self.high, strict=True)
            ):
                raise EnvSpecError(
                    f"box bounds must satisfy low < high everywhere, got low={self.low} high={self.high}"
                )
        else:
            raise EnvSpecError(f"action type {self.type!r} is not one of {', '.join(ACTION_TYPES)}")

    @classmethod
    def discrete(cls, n: int) -> ActionSpace:
        return cls("discrete", n=int(n))

    @classmethod
    def multi_discrete(cls, nvec: list[int] | tuple[int, ...]) -> ActionSpace:
        return cls("multi_discrete", nvec=tuple(int(v) for v in nvec))

    @classmethod
    def box(cls, shape: list[int] | tuple[int, ...], low: Any, high: Any) -> ActionSpace:
        """``low``/``high``: prod(shape) numbers (None or ±inf for unbounded), or arrays of ``shape``."""
        size = math.prod(int(d) for d in shape)

        def flat(values: Any, unbounded: float) -> tuple[float, ...]:
            array = np.asarray([unbounded if v is None else v for v in np.asarray(values, dtype=object).reshape(-1)])
            # Rounded to float32, what the wire carries, so a spec from a file equals the one from a Hello.
            return tuple(float(v) for v in np.broadcast_to(array.astype(np.float32), (size,)))

        return cls("box", shape=tuple(int(d) for d in shape), low=flat(low, -math.inf), high=flat(high, math.inf))

    @property
    def num_actions(self) -> int:
        """What ``Hello.num_actions`` carries: n for a discrete space, 0 otherwise."""
        return self.n if self.type == "discrete" else 0

    @property
    def param_size(self) -> int:
        """P, the width of the policy's distribution parameters (logits; or mean and log-std)."""
        if self.type == "discrete":
            return self.n
        if self.type == "multi_discrete":
            return sum(self.nvec)
        return 2 * math.prod(self.shape)

    @property
    def shape_per_env(self) -> tuple[int, ...]:
        """One env's action: () discrete, (K,) multi-discrete, ``shape`` box."""
        if self.type == "discrete":
            return ()
        return (len(self.nvec),) if self.type == "multi_discrete" else self.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """int64 for discrete and multi-discrete actions, float32 for box actions."""
        return np.dtype(np.float32) if self.type == "box" else np.dtype(np.int64)

    def describe(self) -> str:
        if self.type == "discrete":
            return f"Discrete({self.n})"
        if self.type == "multi_discrete":
            return f"MultiDiscrete({list(self.nvec)})"
        return f"Box(shape={list(self.shape)}, low={list(self.low)}, high={list(self.high)})"

    def to_dict(self) -> dict[str, Any]:
        """The spec file's ``action`` object (unbounded sides as None)."""
        if self.type == "discrete":
            return {"type": "discrete", "n": self.n}
        if self.type == "multi_discrete":
            return {"type": "multi_discrete", "nvec": list(self.nvec)}

        def finite(values: tuple[float, ...]) -> list[float | None]:
            return [v if math.isfinite(v) else None for v in values]

        return {"type": "box", "shape": list(self.shape), "low": finite(self.low), "high": finite(self.high)}

    @classmethod
    def from_dict(cls, data: Any) -> ActionSpace:
        if not isinstance(data, dict):
            raise EnvSpecError(f"action must be an object with a type, got {data!r}")
        kind = data.get("type")
        allowed = {"discrete": {"n"}, "multi_discrete": {"nvec"}, "box": {"shape", "low", "high"}}
        if kind not in allowed:
            raise EnvSpecError(f"action.type {kind!r} is not one of {', '.join(ACTION_TYPES)}")
        keys = set(data) - {"type"}
        if keys != allowed[kind]:
            raise EnvSpecError(f"a {kind} action takes exactly {sorted(allowed[kind])}, got {sorted(keys)}")
        try:
            if kind == "discrete":
                return cls.discrete(_int(data["n"], "action.n"))
            if kind == "multi_discrete":
                return cls.multi_discrete([_int(v, "action.nvec") for v in _list(data["nvec"], "action.nvec")])
            shape = [_int(v, "action.shape") for v in _list(data["shape"], "action.shape")]
            low, high = _list(data["low"], "action.low"), _list(data["high"], "action.high")
            if len(low) != math.prod(shape) or len(high) != math.prod(shape):
                raise EnvSpecError(
                    f"action.low and action.high need prod(shape)={math.prod(shape)} values each, "
                    f"got {len(low)} and {len(high)}"
                )
            return cls.box(shape, low, high)
        except (TypeError, ValueError) as err:
            raise EnvSpecError(str(err)) from None

    @classmethod
    def from_hello(cls, hello: actorpool_pb2.Hello) -> ActionSpace:
        """The space a Hello declares (no ``action_spec`` means ``Discrete(num_actions)``)."""
        kind = hello.action_spec.WhichOneof("kind") if hello.HasField("action_spec") else None
        if kind is None:
            return cls.discrete(hello.num_actions)
        if kind == "discrete":
            return cls.discrete(hello.action_spec.discrete)
        if kind == "multi_discrete":
            return cls.multi_discrete(list(hello.action_spec.multi_discrete.nvec))
        box = hello.action_spec.box
        return cls.box(list(box.shape), list(box.low), list(box.high))

    def to_proto(self) -> actorpool_pb2.ActionSpec:
        if self.type == "discrete":
            return actorpool_pb2.ActionSpec(discrete=self.n)
        if self.type == "multi_discrete":
            return actorpool_pb2.ActionSpec(multi_discrete=actorpool_pb2.MultiDiscrete(nvec=self.nvec))
        return actorpool_pb2.ActionSpec(box=actorpool_pb2.Box(shape=self.shape, low=self.low, high=self.high))

    def clip(self, actions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Box actions ``[E, *shape]`` clipped to the finite bounds (float32); others unchanged."""
        if self.type != "box":
            return actions
        low = np.asarray(self.low, np.float32).reshape(self.shape)
        high = np.asarray(self.high, np.float32).reshape(self.shape)
        clipped: np.ndarray[Any, Any] = np.clip(actions, low, high).astype(np.float32, copy=False)
        return clipped


@dataclass(frozen=True)
class EnvSpec:
    """One env's observation (dtype name, shape) and action space: what a model is built for."""

    observation_shape: tuple[int, ...]
    observation_dtype: str
    action: ActionSpace

    def __post_init__(self) -> None:
        if self.observation_dtype not in OBSERVATION_DTYPES:
            raise EnvSpecError(
                f"observation.dtype {self.observation_dtype!r} is not one of {', '.join(OBSERVATION_DTYPES)}"
            )
        if any(d < 1 for d in self.observation_shape):
            raise EnvSpecError(f"observation.shape must hold positive sizes, got {list(self.observation_shape)}")

    def describe(self) -> str:
        return f"observation {self.observation_dtype}{list(self.observation_shape)}, action {self.action.describe()}"

    def to_dict(self) -> dict[str, Any]:
        observation = {"shape": list(self.observation_shape), "dtype": self.observation_dtype}
        return {"observation": observation, "action": self.action.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> EnvSpec:
        if not isinstance(data, dict) or set(data) != {"observation", "action"}:
            raise EnvSpecError("an env spec is an object with exactly 'observation' and 'action'")
        obs = data["observation"]
        if not isinstance(obs, dict) or set(obs) != {"shape", "dtype"}:
            raise EnvSpecError("observation must be an object with exactly 'shape' and 'dtype'")
        shape = tuple(_int(v, "observation.shape") for v in _list(obs["shape"], "observation.shape"))
        return cls(shape, str(obs["dtype"]), ActionSpace.from_dict(data["action"]))


def load_env_spec(path: Path | str) -> EnvSpec:
    """Read a spec file (``.json``; anything else is read as YAML, of which JSON is a subset)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise EnvSpecError(f"cannot read env spec {path}: {err.strerror}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # only for YAML files

            data = yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError's subclasses are ValueErrors or not
        raise EnvSpecError(f"env spec {path} is not valid JSON: {err}") from None
    except Exception as err:  # yaml.YAMLError
        raise EnvSpecError(f"env spec {path} is not valid YAML: {err}") from None
    try:
        return EnvSpec.from_dict(data)
    except EnvSpecError as err:
        raise EnvSpecError(f"env spec {path}: {err}") from None


def resolve(env_id: str | None, spec_file: Path | str | None) -> EnvSpec:
    """The run's spec from a spec file, a Gymnasium id (``module:Id`` imports ``module`` first), or both,
    which must agree; raises ``EnvSpecError`` naming both values when they do not."""
    if spec_file is None:
        if not env_id:
            raise EnvSpecError("no environment: pass --env-spec FILE or --env ID")
        return spec_of_env(env_id)
    declared = load_env_spec(spec_file)
    if env_id:
        derived = spec_of_env(env_id)
        if derived != declared:
            raise EnvSpecError(
                f"--env {env_id} and --env-spec {spec_file} disagree: {env_id} has {derived.describe()}, "
                f"the spec file says {declared.describe()}"
            )
    return declared


def spec_of_env(env_id: str) -> EnvSpec:
    """The spec of a Gymnasium id, read off the env built with ``make_env`` (and closed again)."""
    from impala.core.envs import make_env

    try:
        env = make_env(env_id)
    except Exception as err:  # gymnasium raises several types for unknown or broken ids
        raise EnvSpecError(f"cannot make the Gymnasium env {env_id!r}: {err}") from None
    try:
        return from_spaces(env.observation_space, env.action_space, name=env_id)
    finally:
        env.close()


def from_spaces(observation_space: Any, action_space: Any, *, name: str = "the env") -> EnvSpec:
    """The spec of Gymnasium spaces (``Box`` observations; Discrete, MultiDiscrete or Box actions). A
    discrete space's ``start`` is not part of the spec (actions are 0-based on the wire): whoever steps
    the env adds ``action_offset``."""
    import gymnasium as gym

    if not isinstance(observation_space, gym.spaces.Box):
        raise EnvSpecError(f"{name}: needs a Box observation space, got {observation_space}")
    dtype = np.dtype(observation_space.dtype).name
    return EnvSpec(tuple(int(d) for d in observation_space.shape), dtype, action_space_of(action_space, name=name))


def action_space_of(space: Any, *, name: str = "the env") -> ActionSpace:
    """The ``ActionSpace`` of a Gymnasium action space (or an ``ActionSpace``, returned as it is)."""
    import gymnasium as gym

    if isinstance(space, ActionSpace):
        return space
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpace.discrete(int(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise EnvSpecError(f"{name}: MultiDiscrete actions must be 1-D, got nvec of shape {space.nvec.shape}")
        return ActionSpace.multi_discrete([int(v) for v in space.nvec])
    if isinstance(space, gym.spaces.Box):
        return ActionSpace.box(space.shape, space.low, space.high)
    raise EnvSpecError(f"{name}: action space {space} is not Discrete, MultiDiscrete or Box")


def action_offset(space: Any) -> Any:
    """What to add to a 0-based wire action for a Gymnasium space with a ``start`` (0 otherwise)."""
    start = getattr(space, "start", 0)
    return start if np.any(start != 0) else 0


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise EnvSpecError(f"{name} must be a list, got {value!r}")
    return value


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnvSpecError(f"{name} must hold integers, got {value!r}")
    return value
