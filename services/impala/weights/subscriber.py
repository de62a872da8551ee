"""``WeightSubscriber``: the ActorPool's client of the weight service (asyncio).

``async for update in subscriber.updates()`` yields each new version (latest wins: while the pool is
busy with one, the service skips the ones in between). The stream survives anything: on any failure
it logs one line, waits with capped exponential backoff and resubscribes with ``after_version`` set
to the last version it yielded, so the pool keeps acting on its last weights meanwhile.

With ``bulk`` (the default) it asks for announcements; the first one names the service's bulk data
plane, where it opens a push subscription and leaves the gRPC stream: from then on the service writes
each new version to that connection (ADR 0013), and each is checked (length, fingerprint, sha256)
before it is yielded. Any data-plane failure (refused, cut off, corrupt) logs one line, calls
``on_bulk_fallback`` and takes the next version as gRPC chunks on a fresh subscription; the one after
that asks for bulk again. A service without a data plane sends chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from impala.core.backoff import Backoff
from impala.weights import bulk_client
from impala.weights.chunks import MAX_CHUNK_BYTES, Assembler, RejectedError, check_header
from impala.weights.v1 import weights_pb2, weights_pb2_grpc

log = logging.getLogger(__name__)

# Refusals that retrying will not fix until someone changes the deployment: logged as errors.
_CONFIG_ERRORS = (
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


@dataclass(frozen=True)
class WeightUpdate:
    """One complete, checksum-verified version (``payload``: a serialized ``impala.weights.v1.Weights``)."""

    version: int
    fingerprint: str
    payload: bytes


class WeightSubscriber:
    """Follows the weight service forever.

    Args:
        address: ``host:port`` of the weight service.
        token: bearer token ('' = none).
        fingerprint: this pool's model fingerprint; the service refuses other models' weights.
        subscriber_id: name in the service's logs (the pool id).
        after_version: the version the pool already has (only newer ones are sent).
        tls_ca: PEM root certificate to verify a TLS service (None = plaintext).
        max_version_bytes: largest version accepted from the service.
        bulk: fetch bytes from the bulk data plane when the service offers it.
        bulk_timeout_s: longest the data plane may take to connect or to deliver a version it has begun
            before the subscriber falls back to chunks.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        fingerprint: str = "",
        subscriber_id: str = "",
        after_version: int = 0,
        tls_ca: Path | None = None,
        max_version_bytes: int = 1024 * 1024 * 1024,
        bulk: bool = True,
        bulk_timeout_s: float = 60.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.address, self.fingerprint, self.subscriber_id = address, fingerprint, subscriber_id
        self.last_version = after_version
        self.max_version_bytes = max_version_bytes
        self.bulk, self.bulk_timeout_s = bulk, bulk_timeout_s
        self.on_bulk_fallback: Callable[[str], None] | None = None  # called with the reason of each fallback
        self._token = token
        self._host = address.rsplit(":", 1)[0].strip("[]")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [
            ("grpc.max_receive_message_length", MAX_CHUNK_BYTES + 64 * 1024),
            # Notice a dead service behind a silent network (no RST) within ~30 s.
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # gRPC's own reconnect backoff (default up to 120 s) would delay us long after the
            # service is back: keep it within ours.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 10_000),
        ]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
            self._channel = grpc.aio.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        self._stub = weights_pb2_grpc.WeightServiceStub(self._channel)
        self._backoff = backoff or Backoff(base_s=0.1, cap_s=10.0)
        self._closed = asyncio.Event()
        self._call: grpc.aio.UnaryStreamCall[weights_pb2.SubscribeRequest, weights_pb2.WeightChunk] | None = None
        self._receiver: bulk_client.PushReceiver | None = None

    async def updates(self) -> AsyncGenerator[WeightUpdate, None]:
        """Each new version, forever (until ``close()``)."""
        bulk = self.bulk
        while not self._closed.is_set():
            try:
                back_to_bulk = False
                async with contextlib.aclosing(self._subscribe_once(bulk)) as subscription:
                    async for update in subscription:
                        self._backoff.reset()
                        self.last_version = update.version
                        yield update
                        if bulk != self.bulk:  # one version took the chunks after a data-plane failure
                            back_to_bulk = True
                            break
                if back_to_bulk:
                    bulk = True
                    continue
                if self._closed.is_set():
                    return
                self._log_failure(grpc.StatusCode.OK, "stream ended")
            except _BulkFailedError as exc:
                if self._closed.is_set():
                    return
                self._fall_back(exc)
                bulk = False  # at once, no backoff: the gRPC side is fine
                continue
            except grpc.aio.AioRpcError as exc:
                if self._closed.is_set():
                    return
                self._log_failure(exc.code(), exc.details() or "")
            except RejectedError as exc:
                self._log_failure(exc.code, str(exc))
            await self._backoff.sleep_async(self._closed)

    async def close(self) -> None:
        """End ``updates()`` and close the channel and the push connection."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        if self._receiver is not None:
            self._receiver.close()  # ``updates()`` waiting for a pushed version ends
        await self._channel.close()

    async def _subscribe_once(self, bulk: bool) -> AsyncGenerator[WeightUpdate, None]:
        request = weights_pb2.SubscribeRequest(
            subscriber_id=self.subscriber_id, fingerprint=self.fingerprint, after_version=self.last_version, bulk=bulk
        )
        call = self._call = self._stub.Subscribe(request, metadata=self._metadata)
        assembler = Assembler(self.max_version_bytes)
        try:
            async for chunk in call:
                if chunk.bulk_port:
                    port = self._check_announcement(chunk)
                    call.cancel()  # the data plane takes over; the service frees the stream
                    async for update in self._pushed(port, chunk.version):
                        yield update
                    return
                done = assembler.add(chunk)
                if done is not None:
                    assembler = Assembler(self.max_version_bytes)
                    yield WeightUpdate(done.version, done.fingerprint, done.payload)
        finally:
            call.cancel()  # no-op when it already ended; frees the stream when the caller stopped early

    def _check_announcement(self, a: weights_pb2.WeightChunk) -> int:
        """The data plane's port from an announcement; ``_BulkFailedError`` when it is malformed."""
        try:
            check_header(a, self.max_version_bytes)
        except RejectedError as exc:
            raise _BulkFailedError(exc.reason, f"announcement: {exc}", a.version) from None
        if not 0 < a.bulk_port < 1 << 16:
            raise _BulkFailedError("malformed", f"announcement: bulk_port {a.bulk_port} is not a TCP port", a.version)
        return a.bulk_port

    async def _pushed(self, port: int, announced: int) -> AsyncGenerator[WeightUpdate, None]:
        """Each version the data plane pushes, checked; ends when the service closes the connection
        between versions (it is stopping) or on ``close()``. Raises ``_BulkFailedError`` for anything
        else, including no frame within ``bulk_timeout_s`` of connecting: the announcement promised a
        newer version, which the service pushes at once."""
        try:
            receiver = self._receiver = await bulk_client.push_subscribe(
                self._host,
                port,
                self.last_version,
                self._token,
                max_bytes=self.max_version_bytes,
                timeout_s=self.bulk_timeout_s,
            )
        except bulk_client.FetchError as exc:
            raise _BulkFailedError("fetch", str(exc), announced) from None
        first = True
        try:
            while not self._closed.is_set():
                try:
                    async with asyncio.timeout(self.bulk_timeout_s if first else None):
                        pushed = await receiver.next(self.bulk_timeout_s)
                except TimeoutError:
                    raise _BulkFailedError(
                        "fetch", f"no version pushed within {self.bulk_timeout_s} s of connecting", announced
                    ) from None
                except bulk_client.FetchError as exc:  # after close() too: updates() then just ends
                    raise _BulkFailedError(exc.reason, str(exc), announced) from None
                first = False
                if pushed is None:
                    if not self._closed.is_set():
                        log.info("the weight service closed the push connection", extra={"address": self.address})
                    return
                payload = bytes(pushed.payload)  # decoders want bytes; one copy per version on this side
                receiver.release(pushed.payload)
                yield await self._checked(pushed, payload)
        finally:
            receiver.close()
            self._receiver = None

    async def _checked(self, pushed: bulk_client.Pushed, payload: bytes) -> WeightUpdate:
        """The pushed version once its fingerprint, order and sha256 are right; ``_BulkFailedError`` if not."""
        v = pushed.version
        if self.fingerprint and pushed.fingerprint != self.fingerprint:
            raise _BulkFailedError(
                "fingerprint", f"pushed fingerprint {pushed.fingerprint!r}, ours {self.fingerprint!r}", v
            )
        if v <= self.last_version:
            raise _BulkFailedError("malformed", f"pushed version {v} after version {self.last_version}", v)
        digest = await asyncio.to_thread(_sha256, payload)
        if digest != pushed.sha256:
            raise _BulkFailedError("checksum", f"sha256 {digest} differs from the pushed {pushed.sha256}", v)
        return WeightUpdate(v, pushed.fingerprint, payload)

    def _fall_back(self, exc: _BulkFailedError) -> None:
        log.warning(
            "bulk weight fetch failed, taking this version as gRPC chunks",
            extra={"address": self.address, "version": exc.version, "reason": exc.reason, "error": str(exc)},
        )
        if self.on_bulk_fallback is not None:
            self.on_bulk_fallback(exc.reason)

    def _log_failure(self, code: grpc.StatusCode, details: str) -> None:
        level = logging.ERROR if code in _CONFIG_ERRORS else logging.WARNING
        log.log(
            level,
            "weight subscription interrupted, resubscribing",
            extra={
                "address": self.address,
                "code": code.name,
                "error": details,
                "last_version": self.last_version,
                "retry_within_s": self._backoff.ceiling(),
            },
        )


class _BulkFailedError(Exception):
    """A data-plane fetch failed; ``reason`` labels ``on_bulk_fallback``."""

    def __init__(self, reason: str, message: str, version: int) -> None:
        super().__init__(message)
        self.reason, self.version = reason, version


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
