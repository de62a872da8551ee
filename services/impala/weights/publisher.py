"""``WeightPublisher``: the learner's client of the weight service (sync, called from its loop thread)."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any, cast

import grpc

from impala.core.backoff import Backoff
from impala.weights.chunks import MAX_CHUNK_BYTES, split
from impala.weights.v1 import weights_pb2_grpc

log = logging.getLogger(__name__)

# Worth another try: the service is down or restarting, or the call timed out on the way.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class PublishRefusedError(RuntimeError):
    """The service refused the version (stale, other model, malformed, corrupt, bad token).

    ``current_version`` is the version the service serves when the refusal was "stale" (0 otherwise):
    a learner restored from an older checkpoint can continue numbering above it.
    """

    def __init__(self, code: grpc.StatusCode, details: str, current_version: int = 0) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.current_version = code, details, current_version


class PublisherClosedError(RuntimeError):
    """``close()`` was called while ``publish`` was retrying."""


class WeightPublisher:
    """Publishes versions in chunks of at most 4 MiB, retrying with backoff while the service is away.

    Args:
        address: ``host:port`` of the weight service.
        token: bearer token ('' = none).
        tls_ca: PEM root certificate to verify a TLS service (None = plaintext).
        chunk_bytes: data bytes per chunk (≤ 4 MiB).
        timeout_s: deadline of one Publish call.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        tls_ca: Path | None = None,
        chunk_bytes: int = MAX_CHUNK_BYTES,
        timeout_s: float = 120.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.address, self.chunk_bytes, self.timeout_s = address, chunk_bytes, timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [
            ("grpc.max_send_message_length", MAX_CHUNK_BYTES + 64 * 1024),
            # Keep gRPC's own reconnect backoff (default up to 120 s) within ours.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = weights_pb2_grpc.WeightServiceStub(self._channel)
        self._backoff = backoff or Backoff(base_s=0.1, cap_s=5.0)
        self._closed = threading.Event()

    def publish(self, version: int, fingerprint: str, payload: bytes) -> None:
        """Publish one version; returns once the service serves it.

        Retries UNAVAILABLE and DEADLINE_EXCEEDED with backoff until it succeeds or ``close()``;
        raises ``PublishRefusedError`` for any other refusal (FAILED_PRECONDITION: stale version or
        another model's fingerprint).
        """
        sha = hashlib.sha256(payload).hexdigest()
        while True:
            try:
                chunks = split(version, fingerprint, payload, self.chunk_bytes, sha256=sha)
                self._stub.Publish(chunks, metadata=self._metadata, timeout=self.timeout_s)
                self._backoff.reset()
                return
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if code not in _RETRYABLE:
                    current, current_sha = _current(exc)
                    if current == version and current_sha == sha:
                        return  # an earlier attempt got through; only its acknowledgement was lost
                    raise PublishRefusedError(code, details, current) from None
                log.warning(
                    "weight service unreachable, retrying publish",
                    extra={
                        "address": self.address,
                        "version": version,
                        "code": code.name,
                        "error": details,
                        "retry_within_s": self._backoff.ceiling(),
                    },
                )
            if self._backoff.sleep(self._closed):
                raise PublisherClosedError(f"publisher closed before version {version} was published")

    def close(self) -> None:
        """Stop retrying and close the channel."""
        self._closed.set()
        self._channel.close()


def _current(exc: grpc.RpcError) -> tuple[int, str]:
    """The served version and sha256 from a "stale" refusal's trailing metadata."""
    # At runtime the items are (key, value) tuples, not the stub's ``_Metadatum``.
    trailers: dict[str, Any] = dict(cast(Any, exc.trailing_metadata()) or ())
    try:
        return int(trailers.get("current-version", 0)), str(trailers.get("current-sha256", ""))
    except ValueError:
        return 0, ""
