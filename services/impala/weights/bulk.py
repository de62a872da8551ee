"""The bulk data plane: a version's bytes over plain TCP, beside the gRPC control plane (ADR 0009, 0013).

gRPC core copies every message once per subscriber and cuts it into 16 KiB HTTP/2 frames, so a
6.4 MB version to 16 subscribers took 3–5.5× a raw-socket fan-out. Here the service writes the one
``payload`` it holds to each subscriber's socket with ``loop.sock_sendall`` (a memoryview: no copy
in user space), the same writes as the raw baseline of the benchmark.

The wire format (requests, frames, status codes) is in ``impala.weights.bulk_wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from impala.core.grpc_server import token_refusal
from impala.weights.bulk_wire import (
    MAGIC,
    MAX_TOKEN_BYTES,
    PUSH_MAGIC,
    REQUEST,
    RESPONSE,
    Status,
    frame_header,
    keep_alive,
)
from impala.weights.chunks import WeightVersion
from impala.weights.metrics import WeightsMetrics
from impala.weights.store import LatestStore

log = logging.getLogger(__name__)


class BulkServer:
    """Serves the store's current version to whoever presents the token: fetched once, or pushed.

    Args:
        store: where the current version lives (only that one is served).
        metrics: ``bulk_refused`` counts every refusal and broken-off response by reason; push
            subscribers count in ``subscribers`` and each frame in ``sent``.
        token: bearer token ('' = none), compared in constant time.
        max_connections: connections served at once (fetches and push subscriptions); one more is
            answered BUSY.
        request_timeout_s: how long a connection may take to send its request.
        send_timeout_s: how long a subscriber may take to receive a version before it is cut off.
    """

    def __init__(
        self,
        store: LatestStore,
        metrics: WeightsMetrics,
        *,
        token: str = "",
        max_connections: int = 64,
        request_timeout_s: float = 5.0,
        send_timeout_s: float = 60.0,
    ) -> None:
        self.store, self.metrics = store, metrics
        self._tokens = [token.encode()] if token else []
        self.max_connections, self.request_timeout_s = max_connections, request_timeout_s
        self.send_timeout_s = send_timeout_s
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port); returns the bound port."""
        listener = socket.create_server((host, port), backlog=self.max_connections)
        listener.setblocking(False)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(listener), name="weights-bulk-accept")
        log.info("bulk data plane listening", extra={"address": f"{host}:{self.port}", "auth": bool(self._tokens)})
        return self.port

    async def stop(self) -> None:
        """Stop accepting and end every connection (fetching subscribers fall back to chunks, push
        subscribers resubscribe)."""
        tasks = [t for t in (self._accepting, *self._connections) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        self._accepting, self._listener = None, None

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: keep serving the connections we have
                self._count("-", "accept", repr(exc))
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve(conn, f"{peer[0]}:{peer[1]}"))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        with conn:
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._answer(conn, peer)
            except OSError as exc:  # ConnectionError included: the subscriber went away
                self._count(peer, "disconnected", repr(exc))

    async def _answer(self, conn: socket.socket, peer: str) -> None:
        """Read one request and answer it: the version, a push subscription, or a refusal."""
        try:
            async with asyncio.timeout(self.request_timeout_s):
                push, wanted, token = await _read_request(conn)
        except TimeoutError:
            self._count(peer, "timeout", f"no request within {self.request_timeout_s} s")
            return
        except MalformedRequestError as exc:
            await self._refuse(conn, peer, Status.MALFORMED, "malformed", str(exc), exc.push)
            return
        if len(self._connections) > self.max_connections:
            await self._refuse(conn, peer, Status.BUSY, "busy", f"more than {self.max_connections} connections", push)
            return
        if self._tokens and (refusal := token_refusal(token, self._tokens)) is not None:
            await self._refuse(conn, peer, Status.UNAUTHENTICATED, "unauthenticated", refusal, push)
            return
        if push:
            await self._push(conn, peer, wanted)
            return
        latest = self.store.latest
        if latest is None or wanted not in (0, latest.version):
            held = latest.version if latest is not None else 0
            await self._refuse(conn, peer, Status.GONE, "gone", f"version {wanted} not held (holds {held})", push)
            return
        header = RESPONSE.pack(MAGIC, Status.OK, latest.version, len(latest.payload))
        await self._send(conn, peer, header, latest)

    async def _push(self, conn: socket.socket, peer: str, after: int) -> None:
        """Send every version newer than ``after`` until the subscriber leaves or the store closes."""
        keep_alive(conn)
        self.metrics.subscribers.inc()
        log.info("push subscriber joined", extra={"subscriber": peer, "after_version": after})
        left = asyncio.create_task(_closed_by_peer(conn))
        newer: asyncio.Task[WeightVersion | None] | None = None
        try:
            while True:
                newer = asyncio.create_task(self.store.wait_newer(after))
                await asyncio.wait((newer, left), return_when=asyncio.FIRST_COMPLETED)
                if left.done():
                    return
                latest = newer.result()
                if latest is None:  # the service is stopping; the subscriber resubscribes elsewhere
                    return
                header = frame_header(latest.version, latest.sha256, latest.fingerprint, len(latest.payload))
                if not await self._send(conn, peer, header, latest):
                    return
                after = latest.version
        finally:
            left.cancel()
            if newer is not None:  # cancelled while waiting (the service stops), or the subscriber left
                newer.cancel()
            self.metrics.subscribers.dec()
            log.info("push subscriber left", extra={"subscriber": peer, "last_version": after})

    async def _send(self, conn: socket.socket, peer: str, header: bytes, version: WeightVersion) -> bool:
        """Write ``header`` and the version's payload; False when the subscriber did not take it in time."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.send_timeout_s):  # a subscriber that stopped reading
                await loop.sock_sendall(conn, header)
                await loop.sock_sendall(conn, version.payload)  # the one payload object, no copy
        except TimeoutError:
            self._count(peer, "send_timeout", f"version not taken within {self.send_timeout_s} s")
            return False
        self.metrics.sent.inc()
        return True

    async def _refuse(
        self, conn: socket.socket, peer: str, status: Status, reason: str, detail: str, push: bool
    ) -> None:
        self._count(peer, reason, detail)
        answer = frame_header(0, "", "", 0, status) if push else RESPONSE.pack(MAGIC, status, 0, 0)
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(conn, answer)

    def _count(self, peer: str, reason: str, detail: str) -> None:
        self.metrics.bulk_refused.labels(reason).inc()
        # GONE is routine (a slow subscriber asked for a version a newer one replaced).
        level = logging.INFO if reason == "gone" else logging.WARNING
        log.log(
            level,
            "bulk data plane refused or cut off a connection",
            extra={"peer": peer, "reason": reason, "error": detail},
        )


class MalformedRequestError(ValueError):
    """A request the data plane cannot read; ``push`` when it was a push request (the refusal then
    takes the push frame format, as the subscriber expects)."""

    def __init__(self, message: str, *, push: bool = False) -> None:
        super().__init__(message)
        self.push = push


async def _read_request(conn: socket.socket) -> tuple[bool, int, bytes]:
    """(push, version, token) of one request; ``MalformedRequestError`` when malformed,
    ``ConnectionError`` when cut short."""
    head = await recv_exactly(conn, REQUEST.size)
    magic, version, token_len = REQUEST.unpack(head)
    if magic not in (MAGIC, PUSH_MAGIC):
        raise MalformedRequestError(f"bad magic {magic!r}, expected {MAGIC!r} or {PUSH_MAGIC!r}")
    push = magic == PUSH_MAGIC
    if token_len > MAX_TOKEN_BYTES:
        raise MalformedRequestError(f"token of {token_len} bytes, more than {MAX_TOKEN_BYTES}", push=push)
    return push, version, await recv_exactly(conn, token_len)


async def _closed_by_peer(conn: socket.socket) -> None:
    """Returns when the subscriber closes its side (or sends anything: push subscribers only listen)."""
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_recv(conn, 1)


async def recv_exactly(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes from a non-blocking socket; ``ConnectionError`` if the peer closes first."""
    buffer = bytearray(size)
    got = 0
    while got < size:
        received = await asyncio.get_running_loop().sock_recv_into(conn, memoryview(buffer)[got:])
        if received == 0:
            raise ConnectionError(f"connection closed after {got} of {size} bytes")
        got += received
    return bytes(buffer)
