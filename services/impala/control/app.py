"""The control API's app factory: ``create_app(settings, ...)`` wires settings, Redis, the Kubernetes
scaler and the metrics registry (each injectable for tests) into a FastAPI app with one router per
resource. The app holds no state of its own: everything lives in Redis, so it can restart any time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from impala.control import problems
from impala.control.deps import ControlContext
from impala.control.metrics import ControlMetrics, CountRequests
from impala.control.routes import actorpool, checkpoints, health, metrics, run, status
from impala.control.scaler import KubernetesScaler, Scaler
from impala.control.settings import ControlSettings
from impala.control.store import RunStore
from impala.core.logs import register_secret
from impala.core.redis_keys import RunKeys

log = logging.getLogger(__name__)

DESCRIPTION = """Pause, resume, checkpoint, inspect and scale an impala run.

Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`. Errors are
RFC 9457 problem documents (`application/problem+json`). See docs/control-api.md."""


def _operation_id(route: APIRoute) -> str:
    # Stable, readable operation ids for generated clients: "<tag>-<function>".
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    settings: ControlSettings,
    *,
    redis: aioredis.Redis | None = None,
    scaler: Scaler | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the control API. ``redis`` defaults to a client of ``settings.redis_url`` (closed on
    shutdown; an injected one is left open), ``scaler`` to a ``KubernetesScaler`` of the ActorPool
    Deployment, ``registry`` to a fresh ``CollectorRegistry``."""
    token = settings.bearer_token()
    register_secret(token)
    register_secret(urlsplit(settings.redis_url).password or "")  # the URL itself is logged at start-up
    registry = registry if registry is not None else CollectorRegistry()
    ctx = ControlContext(
        settings=settings,
        registry=registry,
        metrics=ControlMetrics.create(registry),
        scaler=scaler
        if scaler is not None
        else KubernetesScaler(settings.actorpool_deployment, settings.namespace, kubeconfig=settings.kubeconfig),
        token=token,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Created here, inside the server's event loop; connections open lazily, so the API starts
        # (and /healthz answers) even while Redis is down.
        client = (
            redis
            if redis is not None
            else aioredis.Redis.from_url(
                settings.redis_url,
                decode_responses=True,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
            )
        )
        ctx.store = RunStore(
            client,
            RunKeys(settings.run),
            learner_timeout_s=settings.learner_timeout_s,
            pool_timeout_s=settings.pool_timeout_s,
        )
        log.info("control API started", extra={"settings": settings.public_dict()})
        try:
            yield
        finally:
            ctx.store = None
            if redis is None:
                await client.aclose()

    app = FastAPI(
        title="impala control API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.ctx = ctx
    problems.install(app)
    app.add_middleware(CountRequests, counter=ctx.metrics.requests)
    for module in (health, status, run, checkpoints, actorpool, metrics):
        app.include_router(module.router)
    _document_limits(app, settings)
    ctx.metrics.zero_routes(app.openapi())
    return app


def _document_limits(app: FastAPI, settings: ControlSettings) -> None:
    """Put the configured replica limit into the spec, so clients (and fuzzers) see what is accepted."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()
        replicas = spec["components"]["schemas"]["ReplicasRequest"]["properties"]["replicas"]
        replicas["maximum"] = settings.max_actorpool_replicas
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
