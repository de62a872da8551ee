"""``impala weights``: run the weight-broadcast service until SIGTERM."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from impala.core import heap, logs, metrics
from impala.core.settings import secret_values
from impala.weights.server import build_weight_service
from impala.weights.settings import WeightsSettings


def run(settings: WeightsSettings) -> int:
    """Serve until SIGTERM or SIGINT, then drain subscribers and stop; returns the exit code."""
    logs.configure(settings.log_level, settings.log_format, secret_values(settings))
    heap.retain_freed_memory()
    registry = metrics.service_registry()
    metrics.serve(registry, settings.metrics_port)
    asyncio.run(_serve(settings, registry))
    return 0


async def _serve(settings: WeightsSettings, registry: CollectorRegistry) -> None:
    service = build_weight_service(settings, registry=registry)
    await service.start()
    try:
        await service.server.serve_until_signal(grace=settings.drain_grace_s)
    finally:
        await service.close()
