"""A scripted env client speaking the raw protocol, and a pool on port 0 with an in-memory sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import torch
from prometheus_client import CollectorRegistry

from impala.actorpool.policy import PolicyHolder
from impala.actorpool.server import ActorPool, build_actorpool
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.sinks import MemorySink
from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core import tensors
from impala.core.models import ModelSpec, build_model
from impala.core.rollouts import RolloutRecord, from_proto
from impala.rollout.v1 import rollout_pb2

SPEC = ModelSpec(observation_shape=(4,), observation_dtype="float32", num_actions=2, kind="mlp", hidden_size=16)


def make_policy(seed: int = 0, spec: ModelSpec = SPEC) -> PolicyHolder:
    torch.manual_seed(seed)
    return PolicyHolder(build_model(spec), version=3, seed=seed)


@asynccontextmanager
async def running_pool(
    *, sink: MemorySink | None = None, spec: ModelSpec = SPEC, **overrides: Any
) -> AsyncIterator[tuple[ActorPool, MemorySink]]:
    settings = ActorPoolSettings(**{"host": "127.0.0.1", "port": 0, "insecure": True, "unroll_length": 5, **overrides})
    sink = sink if sink is not None else MemorySink()
    pool = build_actorpool(settings, policy=make_policy(spec=spec), spec=spec, sink=sink, registry=CollectorRegistry())
    await pool.start()
    try:
        yield pool, sink
    finally:
        await pool.stop()


def decode(payload: bytes) -> RolloutRecord:
    return from_proto(rollout_pb2.Rollout.FromString(payload))


def decoded(sink: MemorySink) -> list[RolloutRecord]:
    return [decode(p) for p in sink.items]


class ScriptedClient:
    """Drives one stream by hand: ``hello``, then ``step`` returns the actions the pool chose."""

    def __init__(self, channel: grpc.aio.Channel, num_envs: int, *, token: str = "", obs_dim: int = 4) -> None:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.call = actorpool_pb2_grpc.ActorPoolStub(channel).Connect(metadata=metadata)
        self.num_envs = num_envs
        self.obs_dim = obs_dim

    async def hello(self, **fields: Any) -> actorpool_pb2.Welcome:
        hello = actorpool_pb2.Hello(
            client_name="scripted",
            num_envs=self.num_envs,
            observation_spec=tensors.spec(np.float32, (self.obs_dim,)),
            num_actions=2,
            protocol_version=1,
        )
        for key, value in fields.items():
            if key == "observation_spec":
                hello.observation_spec.CopyFrom(value)
            else:
                setattr(hello, key, value)
        await self.call.write(actorpool_pb2.EnvMessage(hello=hello))
        reply = await self.call.read()
        assert reply.WhichOneof("kind") == "welcome", reply
        return reply.welcome

    async def send(self, step: actorpool_pb2.Step) -> None:
        await self.call.write(actorpool_pb2.EnvMessage(step=step))

    async def step(
        self,
        obs: np.ndarray,
        reward: Sequence[float] | None = None,
        terminated: Sequence[bool] | None = None,
        truncated: Sequence[bool] | None = None,
        final: np.ndarray | None = None,
    ) -> np.ndarray:
        await self.send(make_step(obs, reward, terminated, truncated, final))
        reply = await self.call.read()
        assert reply.WhichOneof("kind") == "actions", reply
        return np.array(tensors.decode(reply.actions.actions))

    async def close(self) -> grpc.StatusCode:
        await self.call.done_writing()
        return await self.call.code()


def make_step(
    obs: np.ndarray,
    reward: Sequence[float] | None = None,
    terminated: Sequence[bool] | None = None,
    truncated: Sequence[bool] | None = None,
    final: np.ndarray | None = None,
) -> actorpool_pb2.Step:
    E = len(obs)
    step = actorpool_pb2.Step(
        observation=tensors.encode(obs.astype(np.float32)),
        reward=list(reward) if reward is not None else [0.0] * E,
        terminated=list(terminated) if terminated is not None else [False] * E,
        truncated=list(truncated) if truncated is not None else [False] * E,
    )
    if final is not None:
        step.final_observation.CopyFrom(tensors.encode(final.astype(np.float32)))
    return step


def obs_for(episode: np.ndarray, t: np.ndarray, E: int) -> np.ndarray:
    """Observation encoding (episode id, step in episode, env index, 1) so alignment is checkable."""
    return np.stack([episode, t, np.arange(E), np.ones(E)], axis=1).astype(np.float32)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
