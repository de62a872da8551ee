"""The rollout record: one env slot's unroll of T steps, as numpy arrays and as the wire ``Rollout``.

Torch-free (the ActorPool builds records, the learner collates them with ``impala.core.batch``).
Alignment, time-major: ``observation[t]`` is what the policy saw before ``action[t]``; ``reward[t]``,
``terminated[t]`` and ``truncated[t]`` belong to the transition ``t -> t+1``; ``observation[L]`` is the
bootstrap observation and ``observation[T]`` is ``observation[0]`` of the next rollout (T+1 overlap).
Steps ``t >= length`` are padding (``mask`` False, zeros): they contribute nothing to any loss.
Truncation semantics: docs/adr/0003-truncation-bootstrap.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from impala.core import tensors
from impala.core.tensors import TensorError
from impala.rollout.v1 import rollout_pb2
from impala.tensor.v1 import tensor_pb2

Array = npt.NDArray[np.generic]


@dataclass
class RolloutRecord:
    """One env slot, time-major, padded to T (the unroll length)."""

    observation: Array  # [T+1, *obs_shape], obs dtype
    action: Array  # [T, *action_shape]: int64 [T] / [T, K], or float32 [T, *shape] (box, unclipped)
    behaviour_logits: Array  # [T, P], the acting policy's distribution parameters
    behaviour_log_prob: Array  # [T], log μ(action[t])
    reward: Array  # [T]
    terminated: Array  # [T]
    truncated: Array  # [T]
    bootstrap_value: Array  # [T], V_actor(final observation) where truncated[t], else 0
    mask: Array  # [T], True for t < length
    policy_versions: Array  # [T], version that chose action[t]
    length: int
    initial_core_state: tuple[Array, ...] = ()  # each [*state_shape], no batch dim
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    producer_id: str = ""
    session_id: str = ""
    env_index: int = 0

    @property
    def unroll_length(self) -> int:
        """T, the padded number of steps."""
        return int(self.action.shape[0])

    @property
    def policy_version(self) -> int:
        """The oldest policy version that acted in this rollout (0 when it is empty)."""
        return int(self.policy_versions[: self.length].min()) if self.length > 0 else 0


def to_proto(rec: RolloutRecord) -> rollout_pb2.Rollout:
    """Encode a record (one copy of each array into the message); stamps ``created_unix_ns``."""
    msg = rollout_pb2.Rollout(
        policy_version=rec.policy_version,
        length=rec.length,
        producer_id=rec.producer_id,
        session_id=rec.session_id,
        env_index=rec.env_index,
        created_unix_ns=time.time_ns(),
    )
    for name in _FIXED:
        tensors.encode(getattr(rec, name), out=getattr(msg, name))
    for state in rec.initial_core_state:
        tensors.encode(state, out=msg.initial_core_state.add())
    msg.episode_returns.extend(rec.episode_returns)
    msg.episode_lengths.extend(rec.episode_lengths)
    return msg


# Field name -> required dtype (None: any dtype, checked elsewhere). Order is encoding order.
_FIXED: dict[str, npt.DTypeLike | None] = {
    "observation": None,
    "action": None,
    "behaviour_logits": np.float32,
    "behaviour_log_prob": np.float32,
    "reward": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "bootstrap_value": np.float32,
    "mask": np.bool_,
    "policy_versions": np.int64,
}


def from_proto(msg: rollout_pb2.Rollout, *, unroll_length: int | None = None) -> RolloutRecord:
    """Decode and validate a wire rollout; arrays are read-only zero-copy views of the message bytes.

    Raises ``TensorError`` naming the field when a tensor is missing, has the wrong dtype or a shape
    inconsistent with T (``unroll_length`` when given, else the length of ``action``) and P, when
    ``length > T``, ``mask != (arange(T) < length)``, a discrete action ``[T]`` is out of range, a float
    is not finite, or a partial rollout (``length < T``) does not end terminated or truncated. The
    action space itself is the reader's to check (``impala.learner.decoding``).
    """
    for name in _FIXED:
        if not msg.HasField(name):  # type: ignore[arg-type]
            raise TensorError(f"rollout field {name} is missing")
    action: npt.NDArray[Any] = tensors.decode(msg.action, name="action")
    if action.dtype not in (np.dtype("<i8"), np.dtype("<f4")) or action.ndim < 1:
        raise TensorError(f"action: dtype is {action.dtype}{list(action.shape)}, must be int64 or float32 [T, ...]")
    if unroll_length is not None and action.shape[0] != unroll_length:
        raise TensorError(f"action: shape is {list(action.shape)}, expected [{unroll_length}, ...]")
    T = int(action.shape[0])
    logits = _decode(msg.behaviour_logits, "behaviour_logits", np.float32, (T, -1))
    A = int(logits.shape[1])
    if A < 1:
        raise TensorError("behaviour_logits: needs at least one action, got shape [T, 0]")
    observation = tensors.decode(msg.observation, name="observation")
    if observation.ndim < 1 or observation.shape[0] != T + 1:
        raise TensorError(f"observation: shape is {list(observation.shape)}, expected [{T + 1}, ...] (T+1 steps)")
    length = int(msg.length)
    if length > T:
        raise TensorError(f"length {length} exceeds the unroll length T={T}")
    mask = _decode(msg.mask, "mask", np.bool_, (T,))
    if not np.array_equal(mask, np.arange(T) < length):
        raise TensorError(f"mask: must be True exactly for the first length={length} of T={T} steps")
    if action.ndim == 1 and action.dtype.kind == "i" and np.any((action[:length] < 0) | (action[:length] >= A)):
        raise TensorError(f"action: values must lie in [0, {A}) for the {length} valid steps")
    if len(msg.episode_returns) != len(msg.episode_lengths):
        raise TensorError(
            f"episode_returns has {len(msg.episode_returns)} entries but episode_lengths has {len(msg.episode_lengths)}"
        )
    record = RolloutRecord(
        observation=observation,
        action=action,
        behaviour_logits=logits,
        behaviour_log_prob=_decode(msg.behaviour_log_prob, "behaviour_log_prob", np.float32, (T,)),
        reward=_decode(msg.reward, "reward", np.float32, (T,)),
        terminated=_decode(msg.terminated, "terminated", np.bool_, (T,)),
        truncated=_decode(msg.truncated, "truncated", np.bool_, (T,)),
        bootstrap_value=_decode(msg.bootstrap_value, "bootstrap_value", np.float32, (T,)),
        mask=mask,
        policy_versions=_decode(msg.policy_versions, "policy_versions", np.int64, (T,)),
        length=length,
        initial_core_state=tuple(
            _decode(s, f"initial_core_state[{i}]", np.float32, None) for i, s in enumerate(msg.initial_core_state)
        ),
        episode_returns=list(msg.episode_returns),
        episode_lengths=list(msg.episode_lengths),
        producer_id=msg.producer_id,
        session_id=msg.session_id,
        env_index=int(msg.env_index),
    )
    _check_finite(record)
    if 0 < length < T and not (record.terminated[length - 1] or record.truncated[length - 1]):
        # A partial rollout must cut its chain (ADR 0003), or V-trace would bootstrap from padding.
        raise TensorError(f"partial rollout (length {length} < T={T}) must end terminated or truncated")
    return record


def _decode(msg: tensor_pb2.Tensor, name: str, dtype: npt.DTypeLike, shape: tuple[int, ...] | None) -> Any:
    # Any: the dtype was just checked, so callers may treat the view as the specific array type.
    return tensors.decode(msg, name=name, dtype=dtype, shape=shape)


def _check_finite(rec: RolloutRecord) -> None:
    checked: list[tuple[str, Array]] = [
        ("behaviour_logits", rec.behaviour_logits),
        ("behaviour_log_prob", rec.behaviour_log_prob),
        ("reward", rec.reward),
        ("bootstrap_value", rec.bootstrap_value),
        *((f"initial_core_state[{i}]", s) for i, s in enumerate(rec.initial_core_state)),
    ]
    if rec.action.dtype.kind == "f":
        checked.append(("action", rec.action))
    if np.issubdtype(rec.observation.dtype, np.floating):
        checked.append(("observation", rec.observation))
    for name, array in checked:
        if not np.isfinite(array).all():
            raise TensorError(f"{name}: contains NaN or infinity")
