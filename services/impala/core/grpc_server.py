"""gRPC server lifecycle shared by the ActorPool and the weight service.

``GrpcServer`` owns a ``grpc.aio`` server with the standard health service, an optional TLS port and
bearer-token auth, and stops gracefully: health goes NOT_SERVING, new calls are refused, running
calls get ``grace`` seconds (the servicer's own ``drain`` hook runs first).
Pattern after the gRPC examples ``health_checking`` and ``graceful_shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
FIRST_MESSAGE_WAIT_S = 2.0  # how long a refused stream waits for the client's first message


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS port."""

    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (constant-time compare) with
    ``UNAUTHENTICATED``. The health service stays open so probes need no token. ``on_refused`` is
    called with ``missing_token`` or ``unknown_token`` for each refused call (a metric label)."""

    def __init__(self, tokens: Sequence[str], on_refused: Callable[[str], None] | None = None) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method or ""
        if not self._tokens or method.startswith(f"/{HEALTH_SERVICE}/"):
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                if text.startswith("Bearer "):
                    presented = text[len("Bearer ") :].encode()
        reason = token_refusal(presented, self._tokens)
        if reason is None:
            return await continuation(handler_call_details)
        if self._on_refused is not None:
            self._on_refused("unknown_token" if presented else "missing_token")
        return _deny(reason)


def token_refusal(presented: bytes, tokens: Sequence[bytes]) -> str | None:
    """Why ``presented`` is refused (None: it is one of ``tokens``), compared in constant time."""
    if any(hmac.compare_digest(presented, t) for t in tokens):
        return None
    return "missing bearer token" if not presented else "unknown bearer token"


async def refuse_stream(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str
) -> None:
    """End a bidirectional stream with ``code`` after reading the client's first message (at most
    ``FIRST_MESSAGE_WAIT_S``): a client write landing on an already-ended stream can surface as INTERNAL
    instead of ``code``, and the client would retry what it should not."""
    with contextlib.suppress(StopAsyncIteration, TimeoutError, grpc.aio.AioRpcError):
        await asyncio.wait_for(anext(requests), FIRST_MESSAGE_WAIT_S)
    await context.abort(code, details)


def _deny(reason: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def abort_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        details = f"{reason}: send metadata 'authorization: Bearer <token>'"
        await refuse_stream(requests, context, grpc.StatusCode.UNAUTHENTICATED, details)

    return grpc.stream_stream_rpc_method_handler(abort_stream)


@dataclass
class GrpcServer:
    """A started-on-demand aio server. ``services`` are registered before ``start``."""

    host: str
    port: int
    tokens: Sequence[str] = ()
    tls: TlsFiles | None = None
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_streams: int = 1024
    service_names: Sequence[str] = ()
    drain_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_refused: Callable[[str], None] | None = None  # see BearerAuth
    server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    bound_port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        interceptors = [BearerAuth(self.tokens, self.on_refused)] if self.tokens else []
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    async def start(self) -> int:
        address = f"{self.host}:{self.port}"
        if self.tls is not None:
            self.bound_port = self.server.add_secure_port(address, self.tls.credentials())
        else:
            self.bound_port = self.server.add_insecure_port(address)
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "grpc server listening",
            extra={
                "address": f"{self.host}:{self.bound_port}",
                "tls": self.tls is not None,
                "auth": bool(self.tokens),
            },
        )
        return self.bound_port

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING, run drain hooks, then stop with ``grace`` seconds."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for hook in self.drain_hooks:
            await hook()
        await self.server.stop(grace)
        log.info("grpc server stopped", extra={"port": self.bound_port})

    async def serve_until_signal(self, grace: float = 5.0) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received, draining")
        await self.stop(grace)
