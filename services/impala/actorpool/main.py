"""``impala actorpool``: the ingress process. Builds the model from the env id (or a checkpoint),
connects the Redis buffer and the weight service, serves until SIGTERM, then drains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import torch

from impala.actorpool.policy import PolicyHolder
from impala.actorpool.server import WeightUpdates, build_actorpool, default_pool_id
from impala.actorpool.settings import ActorPoolSettings
from impala.buffer.producer import RolloutProducer
from impala.core import heap, logs, metrics
from impala.core.checkpoints import load_policy_weights
from impala.core.device import resolve_device
from impala.core.models import build_model, fingerprint, spec_from_settings
from impala.core.redis_keys import RunKeys
from impala.core.settings import secret_values, with_presets
from impala.core.state_codec import decode_state
from impala.weights.subscriber import WeightSubscriber

log = logging.getLogger(__name__)


async def decoded_updates(subscriber: WeightSubscriber) -> AsyncIterator[tuple[int, dict[str, torch.Tensor]]]:
    """Decode each weight version off the event loop."""
    async for update in subscriber.updates():
        yield update.version, await asyncio.to_thread(decode_state, update.payload)


async def serve(settings: ActorPoolSettings) -> None:
    torch.set_num_threads(1)  # the batched forward is small; one thread leaves the other core to gRPC
    settings = with_presets(settings)  # the learner resolves the same way: same model, same T
    spec = spec_from_settings(settings)
    model = build_model(spec)
    version = 0
    if settings.checkpoint is not None:
        version = load_policy_weights(settings.checkpoint, model)
    pool_id = settings.pool_id or default_pool_id()
    policy = PolicyHolder(model, version=version, device=resolve_device(settings.device), seed=settings.seed)
    registry = metrics.service_registry()
    keys = RunKeys(settings.run)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    sink = RolloutProducer(
        settings.redis_url,
        keys,
        capacity=settings.buffer_capacity,
        shed_when_full=settings.shed_when_full,
        producer_id=pool_id,
        registry=registry,
    )
    updates: WeightUpdates | None = None
    subscriber: WeightSubscriber | None = None
    if settings.weights_address:
        subscriber = WeightSubscriber(
            settings.weights_address,
            token=settings.weights_bearer_token(),
            fingerprint=fingerprint(model),
            subscriber_id=pool_id,
            after_version=version,
        )
        updates = decoded_updates(subscriber)
    pool = build_actorpool(
        settings,
        policy=policy,
        spec=spec,
        sink=sink,
        redis=redis,
        weight_updates=updates,
        registry=registry,
        pool_id=pool_id,
    )
    sink.on_wait = pool.metrics.backpressure_wait.inc
    if subscriber is not None:
        fallbacks = pool.metrics.weight_bulk_fallbacks
        subscriber.on_bulk_fallback = lambda reason: fallbacks.labels(reason).inc()
    metrics.serve(registry, settings.metrics_port)
    port = await pool.start()
    log.info("actorpool ready", extra={"address": f"{settings.host}:{port}", "env": settings.env, "pool": pool_id})
    try:
        await pool.server.serve_until_signal(grace=settings.drain_grace_s)  # drains once, on the signal
    finally:
        await pool.close()
        await redis.aclose()


def run(settings: ActorPoolSettings) -> int:
    logs.configure(settings.log_level, settings.log_format, secret_values(settings))
    heap.retain_freed_memory()
    asyncio.run(serve(settings))
    return 0
