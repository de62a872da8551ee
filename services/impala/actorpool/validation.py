"""Validation of what a client sends. Every check raises a ``StreamError`` naming the field and both
values, so a client author can fix the bug from the status message alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from impala.actorpool.errors import StreamError, invalid, precondition
from impala.actorpool.v1 import actorpool_pb2
from impala.core import tensors
from impala.core.env_spec import ActionSpace, EnvSpecError

PROTOCOL_VERSION = 1
MAX_CLIENT_NAME = 128


@dataclass(frozen=True)
class EnvSpec:
    """What the pool's model accepts: one env's observation and action space."""

    observation_dtype: np.dtype[np.generic]
    observation_shape: tuple[int, ...]
    action: ActionSpace

    @property
    def num_actions(self) -> int:
        """What a matching Hello carries in ``num_actions`` (0 unless discrete)."""
        return self.action.num_actions

    def describe(self) -> str:
        return f"{self.observation_dtype}{list(self.observation_shape)}"


@dataclass(frozen=True)
class StepInput:
    """A validated Step: read-only views over the message bytes."""

    observation: npt.NDArray[np.generic]  # [E, *obs]
    reward: npt.NDArray[np.float32]  # [E]
    terminated: npt.NDArray[np.bool_]  # [E]
    truncated: npt.NDArray[np.bool_]  # [E]
    final_observation: npt.NDArray[np.generic] | None  # [K, *obs], K = count(terminated | truncated)
    ended: npt.NDArray[np.bool_]  # [E], terminated | truncated: obs[i] starts a new episode
    any_ended: bool  # ended.any(), once: most steps end no episode and skip that bookkeeping
    any_truncated: bool


def check_hello(hello: actorpool_pb2.Hello, spec: EnvSpec, max_envs: int) -> None:
    if hello.protocol_version != PROTOCOL_VERSION:
        raise precondition(
            "protocol_version",
            f"Hello.protocol_version is {hello.protocol_version}, this pool speaks {PROTOCOL_VERSION}",
        )
    if len(hello.client_name) > MAX_CLIENT_NAME:
        raise invalid("client_name", f"Hello.client_name has {len(hello.client_name)} chars, at most {MAX_CLIENT_NAME}")
    if not 1 <= hello.num_envs <= max_envs:
        raise invalid("num_envs", f"Hello.num_envs is {hello.num_envs}, must be between 1 and {max_envs}")
    try:
        dtype = tensors.numpy_dtype(hello.observation_spec.dtype)
    except tensors.TensorError as err:
        raise invalid("observation_spec", f"Hello.observation_spec: {err}") from None
    shape = tuple(int(d) for d in hello.observation_spec.shape)
    if dtype.newbyteorder("=") != spec.observation_dtype.newbyteorder("=") or shape != spec.observation_shape:
        raise precondition(
            "observation_spec",
            f"Hello.observation_spec is {dtype}{list(shape)}, the model expects {spec.describe()}",
        )
    check_action_spec(hello, spec.action)


def check_action_spec(hello: actorpool_pb2.Hello, expected: ActionSpace) -> None:
    """``num_actions`` and the optional ``action_spec`` agree with each other and with the model's space."""
    if not hello.HasField("action_spec"):
        if hello.num_actions != expected.num_actions:
            raise precondition(
                "num_actions",
                f"Hello.num_actions is {hello.num_actions}, the model expects {expected.num_actions} "
                f"(action space {expected.describe()})",
            )
        return
    try:
        declared = ActionSpace.from_hello(hello)
    except EnvSpecError as err:
        raise invalid("action_spec", f"Hello.action_spec: {err}") from None
    if hello.num_actions != declared.num_actions:
        raise precondition(
            "num_actions",
            f"Hello.num_actions is {hello.num_actions} but Hello.action_spec is {declared.describe()}, "
            f"which needs num_actions {declared.num_actions}",
        )
    if declared != expected:
        raise precondition(
            "action_spec", f"Hello.action_spec is {declared.describe()}, the model expects {expected.describe()}"
        )


def check_step(step: actorpool_pb2.Step, spec: EnvSpec, num_envs: int, *, first: bool) -> StepInput:
    obs = _tensor(step.observation, "Step.observation", spec, num_envs)
    for name, values in (("reward", step.reward), ("terminated", step.terminated), ("truncated", step.truncated)):
        if len(values) != num_envs:
            raise invalid(name, f"Step.{name} has {len(values)} values, expected num_envs={num_envs}")
    # np.fromiter over protobuf repeated fields is ~10x faster than np.asarray (measured: 1.3 vs 15 µs).
    reward = np.fromiter(step.reward, np.float32, num_envs)
    terminated = np.fromiter(step.terminated, np.bool_, num_envs)
    truncated = np.fromiter(step.truncated, np.bool_, num_envs)
    if not np.isfinite(reward).all():
        raise invalid("reward", f"Step.reward has a non-finite value at env {int(np.argmin(np.isfinite(reward)))}")
    # Both flags set: the episode reached a terminal state; there is nothing to bootstrap.
    truncated = truncated & ~terminated
    ended = terminated | truncated
    if first and ended.any():
        raise invalid("first_step", "the first Step after Welcome carries reset observations: flags must be false")
    final = None
    if step.HasField("final_observation"):
        final = _tensor(step.final_observation, "Step.final_observation", spec, int(ended.sum()))
    elif truncated.any():
        raise invalid(
            "final_observation",
            f"Step.final_observation is missing but {int(truncated.sum())} env(s) are truncated; "
            "it must hold the last observation of every env whose episode ended",
        )
    return StepInput(obs, reward, terminated, truncated, final, ended, bool(ended.any()), bool(truncated.any()))


class StepChecker:
    """``check_step`` for one stream, with a fast path for the common Step (no episode ended, every field
    the expected size): what does not change between steps is computed once, the observation is read with
    one ``np.frombuffer``, and one float64 sum tests observations and rewards for NaN/inf. Anything the
    fast path does not accept goes through ``check_step``, which raises the precise error (or accepts)."""

    def __init__(self, spec: EnvSpec, num_envs: int) -> None:
        self.spec, self.num_envs = spec, num_envs
        self._wire_dtype = tensors.wire_dtype(spec.observation_dtype)
        self._dtype = spec.observation_dtype.newbyteorder("<")
        self._shape = (num_envs, *spec.observation_shape)
        self._nbytes = math.prod(self._shape) * spec.observation_dtype.itemsize
        # float16/32 values summed in float64 cannot overflow, so the sum is finite exactly when every value
        # is; float64 observations are checked value by value.
        kind, itemsize = spec.observation_dtype.kind, spec.observation_dtype.itemsize
        self._sum_obs = kind == "f" and itemsize <= 4
        self._scan_obs = kind == "f" and itemsize > 4
        self._no_flags = np.zeros(num_envs, dtype=np.bool_)
        self._no_flags.flags.writeable = False

    def check(self, step: actorpool_pb2.Step, *, first: bool) -> StepInput:
        E, obs_msg = self.num_envs, step.observation
        data = obs_msg.data  # read once: with upb every access of a bytes field copies it
        if (
            len(data) != self._nbytes
            or obs_msg.dtype != self._wire_dtype
            or tuple(obs_msg.shape) != self._shape
            or len(step.reward) != E
            or len(step.terminated) != E
            or len(step.truncated) != E
            or any(step.terminated)
            or any(step.truncated)
            or step.HasField("final_observation")
        ):
            return check_step(step, self.spec, E, first=first)
        obs = np.frombuffer(data, dtype=self._dtype).reshape(self._shape)
        reward = np.fromiter(step.reward, np.float32, E)
        total = float(reward.sum(dtype=np.float64))
        if self._sum_obs:
            total += float(obs.sum(dtype=np.float64))
        if not math.isfinite(total) or (self._scan_obs and not np.isfinite(obs).all()):
            return check_step(step, self.spec, E, first=first)
        flags = self._no_flags  # read-only use downstream: nothing ended in this step
        return StepInput(obs, reward, flags, flags, None, flags, False, False)


def _tensor(msg: object, name: str, spec: EnvSpec, rows: int) -> npt.NDArray[np.generic]:
    try:
        array = tensors.decode(
            msg,  # type: ignore[arg-type]
            name=name,
            dtype=spec.observation_dtype,
            shape=(rows, *spec.observation_shape),
        )
    except tensors.TensorError as err:
        raise invalid(name.split(".")[-1], str(err)) from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise invalid(name.split(".")[-1], f"{name} has a NaN or infinite value")
    return array


def unexpected(message: str) -> StreamError:
    return invalid("order", message)
