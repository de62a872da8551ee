"""A scripted ``impala.actorpool.v1.ActorPool`` on a real grpc.aio server (port 0) that records what
clients send and answers with chosen statuses; and a deterministic ``Simulator`` to drive clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np
import numpy.typing as npt

from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core import tensors
from impala.core.grpc_server import refuse_stream

Context = grpc.aio.ServicerContext[actorpool_pb2.EnvMessage, actorpool_pb2.AgentMessage]


@dataclass
class StreamRecord:
    """Everything one stream brought: its metadata, its messages, and whether the client half-closed."""

    metadata: dict[str, str]
    messages: list[actorpool_pb2.EnvMessage] = field(default_factory=list)
    actions: list[npt.NDArray[np.int64]] = field(default_factory=list)
    half_closed: bool = False

    @property
    def steps(self) -> list[actorpool_pb2.Step]:
        return [m.step for m in self.messages if m.WhichOneof("kind") == "step"]


@dataclass
class ScriptedPool(actorpool_pb2_grpc.ActorPoolServicer):
    """Refuses the first streams with ``refusals`` (code, message), breaks stream k after
    ``break_after[k]`` Steps with UNAVAILABLE, holds replies while ``hold`` is set, and otherwise
    answers every Step with actions ``(step index + env index) % num_actions``."""

    num_actions: int = 2
    refusals: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    break_after: dict[int, int] = field(default_factory=dict)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    streams: list[StreamRecord] = field(default_factory=list)
    steps_seen: int = 0

    async def Connect(  # noqa: N802  (gRPC method name)
        self, request_iterator: AsyncIterator[actorpool_pb2.EnvMessage], context: Context
    ) -> AsyncIterator[actorpool_pb2.AgentMessage]:
        index = len(self.streams)
        record = StreamRecord(metadata={k: str(v) for k, v in (context.invocation_metadata() or ())})
        self.streams.append(record)
        if self.refusals:
            code, message = self.refusals.pop(0)
            await refuse_stream(request_iterator, context, code, message)  # as the real pool's auth does
        num_envs, steps = 0, 0
        async for msg in request_iterator:
            record.messages.append(msg)
            if msg.WhichOneof("kind") == "hello":
                num_envs = msg.hello.num_envs
                yield actorpool_pb2.AgentMessage(
                    welcome=actorpool_pb2.Welcome(session_id=uuid.uuid4().hex, unroll_length=5, policy_version=7)
                )
                continue
            self.steps_seen, steps = self.steps_seen + 1, steps + 1
            if steps > self.break_after.get(index, 1 << 62):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "pool is draining (scripted)")
            await eventually(lambda: not self.hold.is_set(), timeout_s=60)
            actions = (steps - 1 + np.arange(num_envs, dtype=np.int64)) % self.num_actions
            record.actions.append(actions)
            yield actorpool_pb2.AgentMessage(
                actions=actorpool_pb2.Actions(actions=tensors.encode(actions), policy_version=7)
            )
        record.half_closed = True


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until ``predicate()`` holds (state owned by another task or process); fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  (polling: the state has no event to wait on)
            await asyncio.sleep(0.005)


@asynccontextmanager
async def serving(
    pool: ScriptedPool, *, credentials: grpc.ServerCredentials | None = None, max_message_bytes: int = 16 << 20
) -> AsyncIterator[int]:
    """Serve ``pool`` on a free loopback port; yields the port."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes)])
    actorpool_pb2_grpc.add_ActorPoolServicer_to_server(pool, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("localhost:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


class Counter:
    """Deterministic simulator. Observation float32 [episode, t, last action, env id]; reward t.

    Episode e of env ``env_id`` lasts ``lengths[e % len(lengths)]`` steps and ends terminated when
    ``terminal[e % len]`` is true, truncated otherwise.
    """

    num_actions = 2

    def __init__(self, env_id: int, lengths: tuple[int, ...], terminal: tuple[bool, ...]) -> None:
        self.env_id, self.lengths, self.terminal = env_id, lengths, terminal
        self.episode, self.t = -1, 0

    def _obs(self, action: int) -> npt.NDArray[np.float32]:
        return np.array([self.episode, self.t, action, self.env_id], np.float32)

    def reset(self) -> npt.NDArray[np.float32]:
        self.episode, self.t = self.episode + 1, 0
        return self._obs(-1)

    def step(self, action: int) -> tuple[npt.NDArray[np.float32], float, bool, bool]:
        self.t += 1
        k = self.episode % len(self.lengths)
        ended = self.t >= self.lengths[k]
        return self._obs(action), float(self.t), ended and self.terminal[k], ended and not self.terminal[k]


def decode(tensor: object) -> npt.NDArray[np.generic]:
    return tensors.decode(tensor)  # type: ignore[arg-type]
