"""Weight service factory: settings and collaborators in, a startable service out. Tests and
``impala weights`` both build it here (port 0 picks a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from impala.core.grpc_server import GrpcServer, TlsFiles
from impala.core.redis_keys import RunKeys
from impala.weights.bulk import BulkServer
from impala.weights.chunks import MAX_CHUNK_BYTES
from impala.weights.metrics import WeightsMetrics
from impala.weights.servicer import SERVICE_NAME, WeightServicer
from impala.weights.settings import WeightsSettings
from impala.weights.store import LatestStore, RedisMirror

log = logging.getLogger(__name__)


@dataclass
class WeightService:
    """A built service; ``start`` loads the stored version (one attempt) and listens."""

    settings: WeightsSettings
    server: GrpcServer
    servicer: WeightServicer
    bulk: BulkServer | None  # None: disabled, or TLS configured (ADR 0009)
    store: LatestStore
    mirror: RedisMirror
    metrics: WeightsMetrics
    port: int = 0
    _mirror_task: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self) -> int:
        loaded = await self.mirror.try_load(self.store)
        if self.store.latest is not None:
            self.metrics.version.set(self.store.latest.version)
            self.metrics.bytes.set(len(self.store.latest.payload))
        self._mirror_task = asyncio.create_task(self.mirror.run(self.store, loaded), name="weights-mirror")
        if self.bulk is not None:
            self.servicer.bulk_port = await self.bulk.start(self.settings.host, self.settings.bulk_port)
        self.port = await self.server.start()
        return self.port

    async def drain(self) -> None:
        """End every Subscribe stream with UNAVAILABLE so pools resubscribe (elsewhere or later)."""
        self.store.close()

    async def stop(self) -> None:
        """Graceful stop: subscribers get UNAVAILABLE, a running Publish gets drain_grace_s."""
        await self.server.stop(grace=self.settings.drain_grace_s)
        await self.close()

    async def close(self) -> None:
        """Stop the data plane and the Redis mirror (after the gRPC server stopped)."""
        if self.bulk is not None:
            await self.bulk.stop()
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror_task
        await self.mirror.flush(self.store, timeout_s=2.0)
        await self.mirror.close()


def build_weight_service(settings: WeightsSettings, *, registry: CollectorRegistry | None = None) -> WeightService:
    """Assemble the service; call ``await service.start()`` to listen."""
    metrics = WeightsMetrics.create(registry or CollectorRegistry())
    store = LatestStore()
    mirror = RedisMirror(settings.redis_url, RunKeys(settings.run), chunk_bytes=settings.chunk_bytes)
    servicer = WeightServicer(
        store, metrics, max_version_bytes=settings.max_version_bytes, chunk_bytes=settings.chunk_bytes
    )
    tls = TlsFiles(settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    server = GrpcServer(
        host=settings.host,
        port=settings.port,
        tokens=[token] if (token := settings.bearer_token()) else [],
        tls=tls,
        # A chunk is at most 4 MiB of data plus a small header.
        max_message_bytes=MAX_CHUNK_BYTES + 64 * 1024,
        service_names=[SERVICE_NAME],
    )
    server.server.add_generic_rpc_handlers((servicer.generic_handler(),))
    server.server.add_registered_method_handlers(SERVICE_NAME, servicer.method_handlers())
    bulk = None
    if settings.bulk and tls is None:
        bulk = BulkServer(
            store,
            metrics,
            token=settings.bearer_token(),
            max_connections=settings.bulk_max_connections,
            request_timeout_s=settings.bulk_request_timeout_s,
            send_timeout_s=settings.bulk_send_timeout_s,
        )
    elif settings.bulk:
        log.info("bulk data plane off: TLS is configured and the data plane is plain TCP (ADR 0009)")
    service = WeightService(settings, server, servicer, bulk, store, mirror, metrics)
    server.drain_hooks.append(service.drain)
    return service
