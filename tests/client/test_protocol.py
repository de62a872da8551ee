"""What ``EnvClient`` puts on the wire, checked message by message on a real gRPC server."""

from __future__ import annotations

import numpy as np
import pytest

from impala.actorpool.v1 import actorpool_pb2
from impala.client import ClientSettings, EnvClient, ProtocolError, SimulatorBatch, wire
from impala.core import tensors
from impala.core.env_spec import ActionSpace
from tests.client.scripted_pool import Counter, ScriptedPool, decode, serving


def counters(num_envs: int, lengths: tuple[int, ...], terminal: tuple[bool, ...]) -> SimulatorBatch:
    return SimulatorBatch([Counter(i, lengths, terminal) for i in range(num_envs)])


async def test_handshake_order_shapes_and_token() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        config = ClientSettings(address=f"127.0.0.1:{port}", token="tok-123456789", client_name="unit", max_steps=3 * 4)
        stats = await EnvClient(counters(3, (100,), (True,)), config).run()
    assert stats.env_steps == 12
    assert stats.streams == 1
    assert stats.failures == 0
    assert stats.policy_version == 7
    [stream] = pool.streams
    assert stream.metadata["authorization"] == "Bearer tok-123456789"
    kinds = [m.WhichOneof("kind") for m in stream.messages]
    assert kinds == ["hello"] + ["step"] * 5  # first Step (reset) + 4 steps of 3 envs
    hello = stream.messages[0].hello
    assert (hello.client_name, hello.num_envs, hello.num_actions, hello.protocol_version) == ("unit", 3, 2, 1)
    assert hello.observation_spec.dtype == tensors.DType.Value("DTYPE_FLOAT32")
    assert list(hello.observation_spec.shape) == [4]
    first = stream.steps[0]
    assert list(first.reward) == [0.0] * 3
    assert not any(first.terminated)
    assert not any(first.truncated)
    assert not first.HasField("final_observation")
    for step in stream.steps:
        obs = decode(step.observation)
        assert obs.dtype == np.float32
        assert obs.shape == (3, 4)
        assert len(step.reward) == len(step.terminated) == len(step.truncated) == 3
    assert stream.half_closed  # the client closed the stream itself when max_steps was reached


async def test_actions_are_applied_to_the_right_env() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        await EnvClient(
            counters(4, (100,), (True,)), ClientSettings(address=f"127.0.0.1:{port}", max_steps=4 * 6)
        ).run()
    [stream] = pool.streams
    for sent, step in zip(stream.actions, stream.steps[1:], strict=False):
        obs = decode(step.observation)
        assert obs[:, 2].tolist() == sent.tolist()  # Counter echoes the action it received
        assert obs[:, 3].tolist() == [0, 1, 2, 3]  # env order is preserved


async def test_final_observation_on_termination_and_truncation() -> None:
    # env 0: episodes of 2 steps, terminated; env 1: 3 steps, truncated; env 2: never ends here.
    batch = SimulatorBatch([Counter(0, (2,), (True,)), Counter(1, (3,), (False,)), Counter(2, (50,), (True,))])
    pool = ScriptedPool()
    async with serving(pool) as port:
        stats = await EnvClient(batch, ClientSettings(address=f"127.0.0.1:{port}", max_steps=3 * 6)).run()
    steps = pool.streams[0].steps
    expected_ends = {2: [0], 3: [1], 4: [0], 6: [0, 1]}  # step index -> envs whose episode ended there
    for k, step in enumerate(steps[1:], start=1):
        terminated, truncated = np.array(step.terminated), np.array(step.truncated)
        ended = np.flatnonzero(terminated | truncated).tolist()
        assert ended == expected_ends.get(k, []), k
        assert terminated.tolist() == [i == 0 and i in ended for i in range(3)]
        assert truncated.tolist() == [i == 1 and i in ended for i in range(3)]
        obs = decode(step.observation)
        if not ended:
            assert not step.HasField("final_observation")
            continue
        final = decode(step.final_observation)
        assert final.shape == (len(ended), 4)
        for row, env in zip(final, ended, strict=True):
            length = 2 if env == 0 else 3
            assert row[1] == length
            assert row[3] == env
            assert obs[env][1] == 0
            assert obs[env][0] == row[0] + 1
        assert [step.reward[i] for i in ended] == [2.0 if i == 0 else 3.0 for i in ended]
    assert stats.episodes == 5  # env 0 ended at steps 2, 4, 6 and env 1 at steps 3, 6
    assert stats.recent_returns[0] == 1.0 + 2.0


async def test_reset_by_reconnect_uses_one_stream_per_episode() -> None:
    # Episodes alternate: 2 steps terminated, 3 steps truncated.
    batch = SimulatorBatch([Counter(0, (2, 3), (True, False))])
    pool = ScriptedPool()
    async with serving(pool) as port:
        config = ClientSettings(address=f"127.0.0.1:{port}", reconnect_on_reset=True, max_steps=2 + 3 + 2)
        stats = await EnvClient(batch, config).run()
    assert stats.episodes == 3
    assert stats.streams == 3
    assert [len(s.steps) for s in pool.streams] == [3, 4, 3]  # first Step + one per env step
    for episode, stream in enumerate(pool.streams):
        assert stream.half_closed
        assert stream.messages[0].WhichOneof("kind") == "hello"
        first = decode(stream.steps[0].observation)
        assert first.tolist() == [[episode, 0, -1, 0]]  # every stream starts from the reset observation
        last = stream.steps[-1]
        if episode % 2 == 0:  # terminated: flag set, observation is the next reset, final the terminal one
            assert list(last.terminated) == [True]
            assert list(last.truncated) == [False]
            assert decode(last.observation)[0, :2].tolist() == [episode + 1, 0]
            assert decode(last.final_observation)[0, :2].tolist() == [episode, 2]
        else:  # truncated: no flag (closing is the truncation), the last observation itself
            assert list(last.terminated) == [False]
            assert list(last.truncated) == [False]
            assert decode(last.observation)[0, :2].tolist() == [episode, 3]
            assert not last.HasField("final_observation")
        assert list(last.reward) == [len(stream.steps) - 1]
        assert not any(any(s.terminated) or any(s.truncated) for s in stream.steps[:-1])


class EndsBoth:
    """Reaches a terminal state exactly at its time limit (Gymnasium may report both flags)."""

    num_actions = 2

    def reset(self) -> np.ndarray:
        return np.zeros(4, np.float32)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        return np.ones(4, np.float32), 1.0, True, True


async def test_terminal_at_the_time_limit_is_sent_as_terminated_only() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        await EnvClient(SimulatorBatch([EndsBoth()]), ClientSettings(address=f"127.0.0.1:{port}", max_steps=2)).run()
    for step in pool.streams[0].steps[1:]:
        assert list(step.terminated) == [True]
        assert list(step.truncated) == [False]
        assert decode(step.final_observation).tolist() == [[1, 1, 1, 1]]


def test_reset_by_reconnect_needs_one_env() -> None:
    with pytest.raises(ValueError, match="num_envs=2"):
        EnvClient(counters(2, (3,), (True,)), ClientSettings(address="127.0.0.1:1", reconnect_on_reset=True))


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros(3, np.int32), "dtype"),
        (np.zeros(2, np.int64), "shape"),
        (np.array([0, 1, 2], np.int64), "outside"),
    ],
)
def test_bad_actions_are_a_protocol_error(actions: np.ndarray, match: str) -> None:
    reply = actorpool_pb2.AgentMessage(actions=actorpool_pb2.Actions(actions=tensors.encode(actions)))
    with pytest.raises(ProtocolError, match=match):
        wire.actions(reply, 3, ActionSpace.discrete(2))
    welcome = actorpool_pb2.AgentMessage(welcome=actorpool_pb2.Welcome())
    with pytest.raises(ProtocolError, match="expected Actions"):
        wire.actions(welcome, 3, ActionSpace.discrete(2))


@pytest.mark.parametrize(
    ("space", "actions", "match"),
    [
        (ActionSpace.multi_discrete([3, 2]), np.array([[0, 1], [2, 2]], np.int64), "outside"),
        (ActionSpace.multi_discrete([3, 2]), np.zeros(2, np.int64), "shape"),
        (ActionSpace.box([2], [-1.0, -1.0], [1.0, 1.0]), np.array([[0.0, 1.5], [0.0, 0.0]], np.float32), "outside"),
        (ActionSpace.box([2], [-1.0, -1.0], [1.0, 1.0]), np.zeros((2, 2), np.int64), "dtype"),
    ],
)
def test_actions_outside_other_spaces_are_a_protocol_error(space: ActionSpace, actions: np.ndarray, match: str) -> None:
    reply = actorpool_pb2.AgentMessage(actions=actorpool_pb2.Actions(actions=tensors.encode(actions)))
    with pytest.raises(ProtocolError, match=match):
        wire.actions(reply, 2, space)
