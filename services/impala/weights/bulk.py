"""The bulk data plane: a version's bytes over plain TCP, beside the gRPC control plane (ADR 0009).

gRPC core copies every message once per subscriber and cuts it into 16 KiB HTTP/2 frames, so a
6.4 MB version to 16 subscribers took 3–5.5× a raw-socket fan-out. Here the service writes the one
``payload`` it holds to each subscriber's socket with ``loop.sock_sendall`` (a memoryview: no copy
in user space), the same writes as the raw baseline of the benchmark.

One fetch per connection (all integers big-endian)::

    request   "IWB1" | u64 version | u16 token length | token (UTF-8, at most 4 KiB)
    response  "IWB1" | u8 status   | u64 version      | u64 length | length bytes (status OK only)

``version`` 0 asks for the current one. The service closes the connection after the response.
Status codes: OK; UNAUTHENTICATED (missing or unknown token); GONE (that version is no longer held,
or none is yet: wait for the next announcement); MALFORMED (bad magic or token length); BUSY (too many
fetches at once: fetch the chunks instead). A request that does not arrive within the request timeout
is dropped without a response; one that does not take the whole version within the send timeout is
cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct

from impala.core.grpc_server import token_refusal
from impala.weights.metrics import WeightsMetrics
from impala.weights.store import LatestStore

log = logging.getLogger(__name__)

MAGIC = b"IWB1"
REQUEST = struct.Struct("!4sQH")
RESPONSE = struct.Struct("!4sBQQ")
MAX_TOKEN_BYTES = 4096


class Status(enum.IntEnum):
    OK = 0
    UNAUTHENTICATED = 1
    GONE = 2
    MALFORMED = 3
    BUSY = 4


def request(version: int, token: str) -> bytes:
    """A fetch request for ``version`` (0 = current)."""
    raw = token.encode()
    return REQUEST.pack(MAGIC, version, len(raw)) + raw


class BulkServer:
    """Serves the store's current version to whoever presents the token.

    Args:
        store: where the current version lives (only that one is served).
        metrics: ``bulk_refused`` counts every refusal and broken-off fetch by reason.
        token: bearer token ('' = none), compared in constant time.
        max_connections: fetches served at once; one more is answered BUSY.
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
        self._fetches: set[asyncio.Task[None]] = set()
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
        """Stop accepting and cancel running fetches (their subscribers fall back or resubscribe)."""
        tasks = [t for t in (self._accepting, *self._fetches) if t is not None]
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
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        with conn:
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._answer(conn, peer)
            except OSError as exc:  # ConnectionError included: the subscriber went away
                self._count(peer, "disconnected", repr(exc))

    async def _answer(self, conn: socket.socket, peer: str) -> None:
        """Read one request and answer it (the version, or a refusal)."""
        if len(self._fetches) > self.max_connections:
            await self._refuse(conn, peer, Status.BUSY, "busy", f"more than {self.max_connections} fetches")
            return
        try:
            async with asyncio.timeout(self.request_timeout_s):
                wanted, token = await _read_request(conn)
        except TimeoutError:
            self._count(peer, "timeout", f"no request within {self.request_timeout_s} s")
            return
        except ValueError as exc:
            await self._refuse(conn, peer, Status.MALFORMED, "malformed", str(exc))
            return
        if self._tokens and (refusal := token_refusal(token, self._tokens)) is not None:
            await self._refuse(conn, peer, Status.UNAUTHENTICATED, "unauthenticated", refusal)
            return
        latest = self.store.latest
        if latest is None or wanted not in (0, latest.version):
            held = latest.version if latest is not None else 0
            await self._refuse(conn, peer, Status.GONE, "gone", f"version {wanted} not held (holds {held})")
            return
        header = RESPONSE.pack(MAGIC, Status.OK, latest.version, len(latest.payload))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.send_timeout_s):  # a subscriber that stopped reading
                await loop.sock_sendall(conn, header)
                await loop.sock_sendall(conn, latest.payload)  # the one payload object, no copy
        except TimeoutError:
            self._count(peer, "send_timeout", f"version not taken within {self.send_timeout_s} s")
            return
        self.metrics.sent.inc()

    async def _refuse(self, conn: socket.socket, peer: str, status: Status, reason: str, detail: str) -> None:
        self._count(peer, reason, detail)
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().sock_sendall(conn, RESPONSE.pack(MAGIC, status, 0, 0))

    def _count(self, peer: str, reason: str, detail: str) -> None:
        self.metrics.bulk_refused.labels(reason).inc()
        # GONE is routine (a slow subscriber asked for a version a newer one replaced).
        level = logging.INFO if reason == "gone" else logging.WARNING
        log.log(level, "bulk fetch refused", extra={"peer": peer, "reason": reason, "error": detail})


async def _read_request(conn: socket.socket) -> tuple[int, bytes]:
    """(version, token) of one request; ``ValueError`` when malformed, ``ConnectionError`` when cut short."""
    head = await recv_exactly(conn, REQUEST.size)
    magic, version, token_len = REQUEST.unpack(head)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if token_len > MAX_TOKEN_BYTES:
        raise ValueError(f"token of {token_len} bytes, more than {MAX_TOKEN_BYTES}")
    return version, await recv_exactly(conn, token_len)


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


class FetchError(Exception):
    """A fetch that did not deliver the announced bytes; ``status`` is the service's answer (None when
    the connection failed or the bytes did not match the announcement)."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.status = status


async def fetch(
    host: str,
    port: int,
    version: int,
    token: str,
    *,
    total_bytes: int,
    timeout_s: float,
    into: memoryview | None = None,
) -> memoryview:
    """The bytes of ``version`` from the data plane at ``host:port``, exactly ``total_bytes`` of them,
    received into ``into`` (a fresh buffer when None).

    Raises ``FetchError`` on a refusal, a length other than announced, a cut connection or a timeout.
    The caller checks the sha256.
    """
    loop = asyncio.get_running_loop()
    receiver = _Receiver(version, total_bytes, into)
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(timeout_s):
            transport, _ = await loop.create_connection(lambda: receiver, host, port)
            transport.write(request(version, token))
            return await receiver.done
    except TimeoutError:
        raise FetchError(f"no complete response within {timeout_s} s") from None
    except OSError as exc:  # ConnectionError is an OSError
        raise FetchError(f"data plane unreachable or cut off: {exc!r}") from None
    finally:
        if transport is not None:
            transport.close()


class _Receiver(asyncio.BufferedProtocol):
    """Reads one response straight into its buffers, the header and then the payload: no future and no
    copy per read, which at 16 fetches of 6.4 MB in 64 KiB reads made a ``sock_recv_into`` loop
    CPU-bound on the subscriber's side."""

    def __init__(self, version: int, total_bytes: int, into: memoryview | None) -> None:
        self.version, self.total_bytes, self.into = version, total_bytes, into
        self.done: asyncio.Future[memoryview] = asyncio.get_running_loop().create_future()
        self.view, self.got, self.payload = memoryview(bytearray(RESPONSE.size)), 0, False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.got :]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got < len(self.view) or self.done.done():
            return
        if self.payload:
            self.done.set_result(self.view)
            return
        magic, status, served, length = RESPONSE.unpack(self.view)
        if magic != MAGIC:
            self.done.set_exception(FetchError(f"bad response magic {magic!r}"))
        elif status != Status.OK:
            known = Status(status) if status in Status.__members__.values() else None
            self.done.set_exception(FetchError(f"data plane answered status {status}", known))
        elif (served, length) != (self.version, self.total_bytes):
            self.done.set_exception(
                FetchError(f"served version {served} of {length} bytes, announced {self.version} of {self.total_bytes}")
            )
        else:
            self.view, self.got, self.payload = self.into or memoryview(bytearray(length)), 0, True
            if len(self.view) != length:
                self.done.set_exception(FetchError(f"a buffer of {len(self.view)} bytes for {length}"))
            elif length == 0:
                self.done.set_result(self.view)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection closed after {self.got} of {len(self.view)} bytes"))
