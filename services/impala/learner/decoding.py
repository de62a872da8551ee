"""Decoding a buffer entry into a RolloutRecord the learner's model can take.

``from_proto`` checks a rollout against itself (shapes consistent with T and A, finite values); this
also checks it against the model (observation shape and dtype, number of actions, recurrent state),
so one bad producer's rollout is dropped as corrupt instead of failing the collation of a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from impala.core.env_spec import ActionSpace
from impala.core.models import ModelSpec
from impala.core.rollouts import RolloutRecord, from_proto
from impala.core.tensors import TensorError
from impala.rollout.v1 import rollout_pb2


def rollout_decoder(spec: ModelSpec, unroll_length: int) -> Callable[[bytes], RolloutRecord]:
    """payload -> record; raises ``TensorError`` (or protobuf's ``DecodeError``) for what cannot be learned from."""
    blank = blank_record(spec, unroll_length)
    observation_shape, observation_dtype = blank.observation.shape, blank.observation.dtype
    state_shapes = tuple(s.shape for s in blank.initial_core_state)

    def decode(payload: bytes) -> RolloutRecord:
        record = from_proto(rollout_pb2.Rollout.FromString(payload), unroll_length=unroll_length)
        if record.observation.shape != observation_shape or record.observation.dtype != observation_dtype:
            raise TensorError(
                f"observation: {record.observation.dtype}{list(record.observation.shape)} does not match the "
                f"model's {observation_dtype}{list(observation_shape)}"
            )
        space = spec.actions
        if record.behaviour_logits.shape[1] != space.param_size:
            raise TensorError(
                f"behaviour_logits: {record.behaviour_logits.shape[1]} parameters, the model's "
                f"{space.describe()} has {space.param_size}"
            )
        if record.action.shape != blank.action.shape or record.action.dtype != blank.action.dtype:
            raise TensorError(
                f"action: {record.action.dtype}{list(record.action.shape)}, the model's {space.describe()} "
                f"needs {blank.action.dtype}{list(blank.action.shape)}"
            )
        if not valid_actions(space, record.action[None, : record.length]).all():
            raise TensorError(f"action: a value outside {space.describe()} in the {record.length} valid steps")
        shapes = tuple(tuple(s.shape) for s in record.initial_core_state)
        if shapes != state_shapes:
            raise TensorError(f"initial_core_state: shapes {shapes}, the model needs {state_shapes}")
        return record

    return decode


def valid_actions(space: ActionSpace, action: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Per step of ``action`` ``[k, T, *action_shape]``: True where the action lies in ``space``
    (discrete values in [0, n), component k of a multi-discrete one in [0, nvec[k]), box values finite)."""
    if space.type == "box":
        inside: npt.NDArray[np.bool_] = np.isfinite(action.reshape(*action.shape[:2], -1)).all(axis=-1)
        return inside
    upper = np.asarray(space.nvec if space.type == "multi_discrete" else space.n)
    inside = (action >= 0) & (action < upper)
    return np.asarray(inside.all(axis=-1) if space.type == "multi_discrete" else inside)


def blank_record(spec: ModelSpec, unroll_length: int) -> RolloutRecord:
    """A zero record of the shapes ``rollout_decoder`` accepts (sizes the learner's batch buffers)."""
    T = unroll_length
    state = tuple(np.zeros(spec.hidden_size, np.float32) for _ in range(2)) if spec.use_lstm else ()
    return RolloutRecord(
        observation=np.zeros((T + 1, *spec.observation_shape), np.dtype(spec.observation_dtype)),
        action=np.zeros((T, *spec.actions.shape_per_env), spec.actions.dtype),
        behaviour_logits=np.zeros((T, spec.actions.param_size), np.float32),
        behaviour_log_prob=np.zeros(T, np.float32),
        reward=np.zeros(T, np.float32),
        terminated=np.zeros(T, np.bool_),
        truncated=np.zeros(T, np.bool_),
        bootstrap_value=np.zeros(T, np.float32),
        mask=np.zeros(T, np.bool_),
        policy_versions=np.zeros(T, np.int64),
        length=0,
        initial_core_state=state,
    )
