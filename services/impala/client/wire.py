"""Building and reading ``impala.actorpool.v1`` messages (pure functions, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from impala.actorpool.v1 import actorpool_pb2
from impala.client.simulator import Array, BatchStep
from impala.core import tensors
from impala.core.env_spec import ActionSpace

PROTOCOL_VERSION = 1


class ProtocolError(RuntimeError):
    """The pool sent something the protocol does not allow (a pool bug; not retried)."""


def hello(name: str, num_envs: int, observation: Array, space: ActionSpace) -> actorpool_pb2.EnvMessage:
    """The handshake; the observation spec is read off a batch of reset observations [E, *obs]."""
    msg = actorpool_pb2.Hello(
        client_name=name[:128],
        num_envs=num_envs,
        observation_spec=tensors.spec(observation.dtype, observation.shape[1:]),
        num_actions=space.num_actions,
        protocol_version=PROTOCOL_VERSION,
        action_spec=space.to_proto(),
    )
    return actorpool_pb2.EnvMessage(hello=msg)


def first_step(observation: Array) -> actorpool_pb2.EnvMessage:
    """The first Step of a stream: reset observations, reward 0, every flag false."""
    no = np.zeros(len(observation), np.bool_)
    return step(observation, np.zeros(len(observation), np.float32), no, no, None)


def batch_step(result: BatchStep) -> actorpool_pb2.EnvMessage:
    """The Step reporting one ``EnvBatch.step``."""
    return step(result.observation, result.reward, result.terminated, result.truncated, result.final_observation)


def last_step_before_reconnect(result: BatchStep) -> actorpool_pb2.EnvMessage:
    """The last Step of a reset-by-reconnect stream (E = 1) whose episode just ended."""
    if result.terminated[0]:
        # A true terminal state: observation is already the next episode's first, final_observation the last.
        return batch_step(result)
    # Truncated: closing the stream is the truncation; send the last observation without flags so the
    # pool records the final reward and bootstraps from V(last observation).
    assert result.final_observation is not None
    no = np.zeros(1, np.bool_)
    return step(result.final_observation, result.reward, no, no, None)


def step(
    observation: Array,
    reward: npt.NDArray[np.float32],
    terminated: npt.NDArray[np.bool_],
    truncated: npt.NDArray[np.bool_],
    final_observation: Array | None,
) -> actorpool_pb2.EnvMessage:
    msg = actorpool_pb2.Step(
        observation=tensors.encode(observation),
        reward=reward.tolist(),
        terminated=terminated.tolist(),
        # A terminal state is terminal even at the time limit: never ask the pool to bootstrap past it.
        truncated=(truncated & ~terminated).tolist(),
    )
    if final_observation is not None:
        tensors.encode(final_observation, out=msg.final_observation)
    return actorpool_pb2.EnvMessage(step=msg)


def welcome(reply: object) -> actorpool_pb2.Welcome:
    """The Welcome that must answer Hello."""
    if not isinstance(reply, actorpool_pb2.AgentMessage) or reply.WhichOneof("kind") != "welcome":
        raise ProtocolError(f"expected Welcome after Hello, got {_kind(reply)}")
    return reply.welcome


def actions(reply: object, num_envs: int, space: ActionSpace) -> tuple[Array, int]:
    """(actions [E, *action shape], policy_version) of the Actions that must answer a Step: int64 for
    discrete and multi-discrete spaces, float32 within the bounds for a box."""
    if not isinstance(reply, actorpool_pb2.AgentMessage) or reply.WhichOneof("kind") != "actions":
        raise ProtocolError(f"expected Actions after Step, got {_kind(reply)}")
    try:
        array = tensors.decode(
            reply.actions.actions, name="Actions.actions", dtype=space.dtype, shape=(num_envs, *space.shape_per_env)
        )
    except tensors.TensorError as err:
        raise ProtocolError(str(err)) from None
    values: npt.NDArray[Any] = array
    if space.type == "box":
        low, high = (np.asarray(b, np.float32).reshape(space.shape) for b in (space.low, space.high))
        inside = bool(np.isfinite(values).all() and (values >= low).all() and (values <= high).all())
    else:
        upper = np.asarray(space.nvec if space.type == "multi_discrete" else space.n)
        inside = bool(((values >= 0) & (values < upper)).all())
    if not inside:
        raise ProtocolError(f"Actions.actions has values outside {space.describe()}: {array.tolist()}")
    return array.astype(space.dtype), int(reply.actions.policy_version)


def _kind(reply: object) -> str:
    if isinstance(reply, actorpool_pb2.AgentMessage):
        return reply.WhichOneof("kind") or "an empty AgentMessage"
    return "end of stream" if reply is not None else "nothing"
