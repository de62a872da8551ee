"""The learner against a real weight service: learning goes on while it is down, the newest version
arrives once it is up, and a restarted learner numbers its versions above what the service serves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import torch

from impala.core.models import build_model, fingerprint, spec_for_env
from impala.core.redis_server import RedisServer, free_port
from impala.core.state_codec import decode_state
from impala.weights.publisher import WeightPublisher
from impala.weights.server import WeightService, build_weight_service
from impala.weights.settings import WeightsSettings
from tests.support import wait_for

from .harness import HIDDEN, KEYS, RUN, learner_settings, produce, rollout, running, sample


@contextmanager
def weight_service(redis_url: str, port: int) -> Iterator[None]:
    """The real service on ``port``, served by an event loop on its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="weights-loop", daemon=True)
    thread.start()
    settings = WeightsSettings(
        host="127.0.0.1", port=port, redis_url=redis_url, run=RUN, drain_grace_s=0.2, insecure=True
    )

    async def start() -> WeightService:  # built inside the loop: the grpc.aio server binds to it
        service = build_weight_service(settings)
        await service.start()
        return service

    service = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def served_version(client: redis.Redis) -> int:
    return int(client.hget(KEYS.weights, "version") or 0)


def test_learning_goes_on_while_the_service_is_down_then_the_latest_version_arrives(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    settings = learner_settings(redis_server.url, tmp_path, weights_address=f"127.0.0.1:{port}")
    with running(settings) as (learner, registry):
        produce(redis_client, [rollout(seed=i) for i in range(6)])
        wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 3)
        assert served_version(redis_client) == 0
        with weight_service(redis_server.url, port):
            # Fresh run: version 1 = initial parameters, then one per update; only the newest matters.
            wait_for(lambda: served_version(redis_client), lambda v: v == 4)
            payload: bytes = redis_client.hget(KEYS.weights, "payload")  # type: ignore[assignment]
            served = decode_state(payload)
            torch.testing.assert_close(served, dict(learner.loop.state.model.state_dict()), rtol=0, atol=0)


def test_versions_continue_above_the_one_the_service_serves(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    model = build_model(spec_for_env("CartPole-v1", hidden_size=HIDDEN))
    with weight_service(redis_server.url, port):
        # A predecessor published up to version 50 and its checkpoints were lost.
        previous = WeightPublisher(f"127.0.0.1:{port}")
        previous.publish(50, fingerprint(model), b"")
        previous.close()
        settings = learner_settings(redis_server.url, tmp_path, weights_address=f"127.0.0.1:{port}")
        with running(settings) as (learner, registry):
            produce(redis_client, [rollout(seed=i) for i in range(2)])
            wait_for(lambda: sample(registry, "impala_learner_steps_total"), lambda v: v == 1)
            wait_for(lambda: served_version(redis_client), lambda v: v == 51)
            assert learner.loop.progress.policy_version == 51
