"""Server half of the ingress benchmark, run as its own process so client and server do not share a
GIL: ``python -m impala.tools.bench.ingress_server {pool|echo} {cartpole|atari} PORT_FILE``.

``echo`` is the bare baseline: a grpc.aio servicer of the same method and messages that answers every
Step with a prebuilt Actions message and does nothing else."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import torch

from impala.actorpool.policy import PolicyHolder
from impala.actorpool.server import build_actorpool
from impala.actorpool.session import Context
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core import heap, tensors
from impala.core.models import ModelSpec, build_model

SPECS = {
    "cartpole": ModelSpec(observation_shape=(4,), observation_dtype="float32", num_actions=2, kind="mlp"),
    "atari": ModelSpec(observation_shape=(4, 84, 84), observation_dtype="uint8", num_actions=6, kind="shallow"),
}


class NullSink:
    """Counts and discards rollouts (the buffer is measured by its own benchmark)."""

    def __init__(self) -> None:
        self.count = 0

    async def put(self, payload: bytes) -> bool:
        self.count += 1
        return True

    async def put_many(self, payloads: Sequence[bytes]) -> int:
        self.count += len(payloads)
        return len(payloads)

    async def close(self) -> None:
        return None


class Echo(actorpool_pb2_grpc.ActorPoolServicer):
    async def Connect(  # noqa: N802
        self, request_iterator: AsyncIterator[actorpool_pb2.EnvMessage], context: Context
    ) -> AsyncIterator[actorpool_pb2.AgentMessage]:
        reply = actorpool_pb2.AgentMessage()
        async for msg in request_iterator:
            if msg.WhichOneof("kind") == "hello":
                actions = tensors.encode(np.zeros(msg.hello.num_envs, dtype=np.int64))
                reply = actorpool_pb2.AgentMessage(actions=actorpool_pb2.Actions(actions=actions))
                yield actorpool_pb2.AgentMessage(welcome=actorpool_pb2.Welcome(session_id="echo", unroll_length=80))
            else:
                yield reply


async def serve(kind: str, obs: str, port_file: Path) -> None:
    torch.set_num_threads(1)
    heap.retain_freed_memory()  # as every service does at start; the echo gets the same heap
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "echo":
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        actorpool_pb2_grpc.add_ActorPoolServicer_to_server(Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await asyncio.to_thread(port_file.write_text, str(port))
        await stop.wait()
        await server.stop(0)
        return
    spec = SPECS[obs]
    settings = ActorPoolSettings(host="127.0.0.1", port=0, insecure=True, max_message_bytes=64 << 20)
    pool = build_actorpool(settings, policy=PolicyHolder(build_model(spec)), spec=spec, sink=NullSink())
    await asyncio.to_thread(port_file.write_text, str(await pool.start()))
    await stop.wait()
    await pool.stop()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
