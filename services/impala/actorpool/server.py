"""ActorPool factory: wires settings and collaborators (policy, sink, control, weight updates) into a
gRPC server. Tests and ``impala actorpool`` both build the pool here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import redis.asyncio as aioredis
import torch
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry

from impala.actorpool.batcher import DynamicBatcher
from impala.actorpool.control import PoolControl
from impala.actorpool.metrics import PoolMetrics
from impala.actorpool.policy import PolicyHolder
from impala.actorpool.servicer import ActorPoolServicer
from impala.actorpool.session import MALFORMED, PoolShared, SessionConfig
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.sinks import RolloutSink
from impala.actorpool.v1 import actorpool_pb2
from impala.actorpool.validation import EnvSpec
from impala.core.grpc_server import GrpcServer, TlsFiles
from impala.core.models import ModelSpec
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import PoolStatus

log = logging.getLogger(__name__)

SERVICE_NAME = "impala.actorpool.v1.ActorPool"
WeightUpdates = AsyncIterator[tuple[int, dict[str, torch.Tensor]]]


def parse_env_message(data: bytes) -> actorpool_pb2.EnvMessage:
    """Bytes that are not an EnvMessage become ``MALFORMED`` so the session can answer INVALID_ARGUMENT
    (the generated registration would end the stream with a bare INTERNAL)."""
    try:
        return actorpool_pb2.EnvMessage.FromString(data)
    except DecodeError:
        return MALFORMED


def register_servicer(servicer: ActorPoolServicer, server: grpc.aio.Server) -> None:
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Connect,
        request_deserializer=parse_env_message,
        response_serializer=actorpool_pb2.AgentMessage.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Connect": handler}),))


def env_spec(spec: ModelSpec) -> EnvSpec:
    return EnvSpec(np.dtype(spec.observation_dtype), tuple(spec.observation_shape), spec.actions)


def default_pool_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ActorPool:
    settings: ActorPoolSettings
    server: GrpcServer
    servicer: ActorPoolServicer
    batcher: DynamicBatcher
    control: PoolControl
    policy: PolicyHolder
    sink: RolloutSink
    metrics: PoolMetrics
    weight_updates: WeightUpdates | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    port: int = 0

    async def start(self) -> int:
        self.batcher.start()
        self.control.start()
        tick = min(1.0, self.settings.handshake_timeout_s / 4, self.settings.idle_timeout_s / 4)
        self._tasks.append(asyncio.create_task(self.servicer.expire_late_reads(tick), name="read-timeouts"))
        if self.weight_updates is not None:
            self._tasks.append(asyncio.create_task(self._follow_weights(self.weight_updates), name="weights"))
        self.port = await self.server.start()
        return self.port

    async def drain(self) -> None:
        """Stop accepting, let every stream ship its partial rollouts and end with UNAVAILABLE."""
        self.servicer.pool.draining.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.servicer.idle.wait(), self.settings.drain_grace_s)
        log.info("drained", extra={"left": len(self.servicer.sessions)})

    async def stop(self) -> None:
        """Graceful stop (drain included), then ``close``."""
        await self.server.stop(grace=self.settings.drain_grace_s)
        await self.close()

    async def close(self) -> None:
        """Release what the pool runs besides the gRPC server (after that server stopped)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.control.stop()
        await self.batcher.stop()
        await self.sink.close()

    async def _follow_weights(self, updates: WeightUpdates) -> None:
        async for version, state_dict in updates:
            self.policy.offer(version, state_dict)

    def status(self) -> PoolStatus:
        return PoolStatus(
            clients=self.servicer.connected,
            env_steps=self.servicer.pool.stats.env_steps,
            rollouts_produced=self.servicer.pool.stats.rollouts_produced,
            rollouts_shed=self.servicer.pool.stats.rollouts_shed,
            policy_version=self.policy.version,
            address=f"{self.settings.host}:{self.port}",
            buffer_capacity=self.settings.buffer_capacity,
        )


def build_actorpool(
    settings: ActorPoolSettings,
    *,
    policy: PolicyHolder,
    spec: ModelSpec,
    sink: RolloutSink,
    redis: aioredis.Redis | None = None,
    weight_updates: WeightUpdates | None = None,
    registry: CollectorRegistry | None = None,
    pool_id: str | None = None,
) -> ActorPool:
    """Assemble a pool; call ``await pool.start()`` to listen (port 0 picks a free one)."""
    metrics = PoolMetrics.create(registry or CollectorRegistry())
    pool_id = pool_id or settings.pool_id or default_pool_id()
    inline = settings.inference == "inline" or (settings.inference == "auto" and policy.device.type == "cpu")
    batcher = DynamicBatcher(
        policy,
        max_batch_size=settings.max_batch_size,
        timeout_s=settings.batch_timeout_s,
        metrics=metrics,
        inline=inline,
    )
    control = PoolControl(
        redis=redis,
        keys=RunKeys(settings.run),
        pool_id=pool_id,
        status_interval_s=settings.status_interval_s,
        on_pause_change=lambda paused: metrics.paused.set(int(paused)),
    )
    shared = PoolShared(
        config=SessionConfig(
            unroll_length=settings.unroll_length,
            max_envs=settings.max_envs_per_client,
            handshake_timeout_s=settings.handshake_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            pool_id=pool_id,
            max_age_s=settings.max_connection_age_s,
            max_age_grace_s=settings.max_connection_age_grace_s,
        ),
        spec=env_spec(spec),
        batcher=batcher,
        sink=sink,
        control=control,
        metrics=metrics,
    )
    servicer = ActorPoolServicer(shared, max_clients=settings.max_clients)
    batcher.waiting_streams = servicer.waiting_streams
    tls = TlsFiles(settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    token = settings.bearer_token()
    server = GrpcServer(
        host=settings.host,
        port=settings.port,
        tokens=[token] if token else [],
        tls=tls,
        max_message_bytes=settings.max_message_bytes,
        max_concurrent_streams=settings.max_clients + 16,
        service_names=[SERVICE_NAME],
        on_refused=lambda reason: metrics.rejected_streams.labels("UNAUTHENTICATED", reason).inc(),
    )
    register_servicer(servicer, server.server)
    metrics.policy_version.set(policy.version)
    pool = ActorPool(settings, server, servicer, batcher, control, policy, sink, metrics, weight_updates)
    server.drain_hooks.append(pool.drain)
    control.status = pool.status
    return pool
