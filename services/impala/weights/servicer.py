"""``impala.weights.v1.WeightService``: Publish from the learner, Subscribe for the pools.

Subscribe streams bytes, not messages: a version's chunks are kept serialized, as the publisher sent
them (``WeightVersion.wire``), and the method is registered with an identity response serializer,
so N subscribers cost N socket writes of the same buffers and no encoding at all.
A subscriber that asks for ``bulk`` gets one small announcement instead, when the service runs the
bulk data plane (``bulk_port`` set), and takes the versions there: ``WeightSubscriber`` ends the
Subscribe stream and keeps a push connection to the data plane (``bulk.py``, ADR 0013).

Status codes a client can see:
- Publish ``INVALID_ARGUMENT``: malformed chunk stream (order, header, sizes, over max_version_bytes).
- Publish ``DATA_LOSS``: the assembled payload does not match its sha256 (corrupted in transit; resend).
- Publish ``FAILED_PRECONDITION``: stale version (trailing metadata ``current-version`` and
  ``current-sha256`` name the served one) or another model's fingerprint.
- Subscribe ``FAILED_PRECONDITION``: the subscriber's fingerprint differs from the served model's.
- ``UNAVAILABLE``: the service is stopping; subscribe again (with ``after_version``).
- ``UNAUTHENTICATED``: missing or unknown bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from impala.weights.chunks import Assembler, RejectedError, WeightVersion
from impala.weights.metrics import WeightsMetrics
from impala.weights.store import LatestStore
from impala.weights.v1 import weights_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "impala.weights.v1.WeightService"
Context = grpc.aio.ServicerContext[Any, Any]


class WeightServicer:
    """Thin handlers over a ``LatestStore``."""

    def __init__(
        self, store: LatestStore, metrics: WeightsMetrics, *, max_version_bytes: int, chunk_bytes: int
    ) -> None:
        self.store, self.metrics = store, metrics
        self.max_version_bytes, self.chunk_bytes = max_version_bytes, chunk_bytes
        self.bulk_port = 0  # the data plane's port once it listens; 0 = chunks for everyone

    async def publish(self, requests: AsyncIterator[bytes], context: Context) -> weights_pb2.PublishAck:
        start = time.perf_counter()
        try:
            version, largest = await self._receive(requests)
            if largest > self.chunk_bytes:
                # Re-cut into chunk_bytes pieces; serializing a large version takes a while, so off the loop.
                version = await asyncio.to_thread(
                    WeightVersion.build,
                    version.version,
                    version.fingerprint,
                    version.payload,
                    self.chunk_bytes,
                    sha256=version.sha256,
                )
            self.store.commit(version)
        except RejectedError as rejection:
            await self._reject(context, rejection, "publish")
            raise AssertionError("unreachable: abort raises") from None
        self.metrics.publish.inc()
        self.metrics.publish_seconds.observe(time.perf_counter() - start)
        self.metrics.version.set(version.version)
        self.metrics.bytes.set(len(version.payload))
        log.info("version published", extra={"version": version.version, "bytes": len(version.payload)})
        return weights_pb2.PublishAck(version=version.version, total_bytes=len(version.payload))

    async def _receive(self, requests: AsyncIterator[bytes]) -> tuple[WeightVersion, int]:
        """The checked version, relayed in the publisher's own serialized chunks, and its largest chunk."""
        assembler = Assembler(self.max_version_bytes)
        done: WeightVersion | None = None
        largest = 0
        async for raw in requests:
            try:
                chunk = weights_pb2.WeightChunk.FromString(raw)
            except DecodeError:
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, "malformed", "not a WeightChunk") from None
            first = not assembler.started
            done = assembler.add(chunk, raw)
            largest = max(largest, len(chunk.data))
            if first:
                self.store.check(chunk.version, chunk.fingerprint)  # refuse before receiving the rest
        if done is None:
            assembler.check_complete()
            raise AssertionError("unreachable: check_complete raises")
        return done, largest

    async def subscribe(self, request: weights_pb2.SubscribeRequest, context: Context) -> AsyncIterator[bytes]:
        who = request.subscriber_id or context.peer()
        after = request.after_version
        bulk_port = self.bulk_port if request.bulk else 0
        self.metrics.subscribers.inc()
        log.info("subscriber joined", extra={"subscriber": who, "after_version": after, "bulk": bool(bulk_port)})
        try:
            _check_subscriber(request.fingerprint, self.store.fingerprint)
            # Headers now, not with the first version: the client learns it is subscribed even when
            # nothing has been published yet.
            await context.send_initial_metadata(())
            while True:
                latest = await self.store.wait_newer(after)
                if latest is None:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "weight service is stopping; subscribe again")
                    return
                _check_subscriber(request.fingerprint, latest.fingerprint)
                if bulk_port:
                    yield _announcement(latest, bulk_port)  # the data plane counts what it sends
                else:
                    for piece in latest.wire:
                        yield piece
                    self.metrics.sent.inc()
                after = latest.version
        except RejectedError as rejection:
            await self._reject(context, rejection, "subscribe")
        finally:
            self.metrics.subscribers.dec()
            log.info("subscriber left", extra={"subscriber": who, "last_version": after})

    async def _reject(self, context: Context, rejection: RejectedError, call: str) -> None:
        self.metrics.rejected.labels(rejection.reason).inc()
        log.warning(
            "weights call refused",
            extra={"call": call, "code": rejection.code.name, "reason": rejection.reason, "error": str(rejection)},
        )
        trailers: Sequence[tuple[str, str]] = ()
        if rejection.reason == "stale" and self.store.latest is not None:
            trailers = (
                ("current-version", str(self.store.latest.version)),
                ("current-sha256", self.store.latest.sha256),
            )
        await context.abort(rejection.code, str(rejection), trailing_metadata=trailers)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Handlers for ``SERVICE_NAME``; Subscribe writes pre-serialized chunks as they are."""
        return grpc.method_handlers_generic_handler(SERVICE_NAME, self.method_handlers())

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        return {
            "Publish": grpc.stream_unary_rpc_method_handler(
                self.publish,
                request_deserializer=None,  # raw bytes: relayed to subscribers as they came
                response_serializer=weights_pb2.PublishAck.SerializeToString,
            ),
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.subscribe,
                request_deserializer=weights_pb2.SubscribeRequest.FromString,
                response_serializer=_identity,
            ),
        }


def _check_subscriber(theirs: str, served: str) -> None:
    if theirs and served and theirs != served:
        raise RejectedError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "fingerprint",
            f"subscriber's model fingerprint {theirs!r} differs from the served model's {served!r}",
        )


def _announcement(version: WeightVersion, bulk_port: int) -> bytes:
    """The chunk that tells a bulk subscriber to fetch ``version`` from the data plane."""
    return weights_pb2.WeightChunk(
        version=version.version,
        fingerprint=version.fingerprint,
        total_bytes=len(version.payload),
        sha256=version.sha256,
        bulk_port=bulk_port,
    ).SerializeToString()


def _identity(data: bytes) -> bytes:
    return data
