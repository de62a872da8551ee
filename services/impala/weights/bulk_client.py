"""The subscriber's side of the bulk data plane (``bulk_wire.py`` has the wire format, ``bulk.py`` the server).

``push_subscribe`` opens a connection that the service keeps writing versions to
(``PushReceiver.next`` hands out the newest complete one); this is what ``WeightSubscriber`` uses,
because a version then costs the service what the raw fan-out costs: no announcement, no connection
set-up and no request per version (ADR 0013). ``fetch`` takes one version over one connection: the
reference client of the fetch request that the service still serves (protocol.md §12), used by the
tests; the pool does not fetch.
Both read with an ``asyncio.BufferedProtocol`` straight into their buffers: no future and no copy per
read (at 16 subscribers of 6.4 MB a ``sock_recv_into`` loop was CPU-bound on the subscriber's side).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from impala.weights.bulk_wire import FRAME, MAGIC, PUSH_MAGIC, RESPONSE, Status, keep_alive, request


class FetchError(Exception):
    """Bytes that did not arrive as announced; ``status`` is the service's answer (None when the
    connection failed, timed out, or the bytes did not match the announcement). ``reason`` labels the
    subscriber's fallback: the status in lower case, else ``reason`` as given, else "fetch"."""

    def __init__(self, message: str, status: Status | None = None, *, reason: str = "fetch") -> None:
        super().__init__(message)
        self.status = status
        self.reason = status.name.lower() if status is not None else reason


def _status(value: int) -> Status | None:
    return Status(value) if value in Status.__members__.values() else None


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
    """Reads one fetch response into its buffers, the header and then the payload."""

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
            self.done.set_exception(FetchError(f"data plane answered status {status}", _status(status)))
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


@dataclass(frozen=True)
class Pushed:
    """One version as pushed: the caller checks ``payload`` against ``sha256`` (hex) before using it."""

    version: int
    fingerprint: str
    sha256: str
    payload: memoryview


async def push_subscribe(
    host: str, port: int, after_version: int, token: str, *, max_bytes: int, timeout_s: float
) -> PushReceiver:
    """A push subscription for every version newer than ``after_version``; ``FetchError`` when the
    data plane cannot be reached within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    receiver = PushReceiver(max_bytes)
    try:
        transport, _ = await asyncio.wait_for(loop.create_connection(lambda: receiver, host, port), timeout_s)
    except TimeoutError:
        raise FetchError(f"data plane not reached within {timeout_s} s") from None
    except OSError as exc:
        raise FetchError(f"data plane unreachable: {exc!r}") from None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        keep_alive(sock)  # between versions the connection is idle for as long as training takes
    transport.write(request(after_version, token, push=True))
    return receiver


class PushReceiver(asyncio.BufferedProtocol):
    """Reads pushed frames (header, fingerprint, payload) into their buffers and keeps the newest
    complete version for ``next`` (latest wins: one the caller has not taken yet is replaced)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self._ready: Pushed | None = None
        self._error: Exception | None = None
        self._eof = False
        self._wakeup = asyncio.Event()
        self._spare: memoryview | None = None  # a released payload buffer, reused for the same size
        self._header: tuple[int, int, str, int] = (0, 0, "", 0)  # version, length, sha256, fingerprint length
        self._fingerprint = ""
        self._stage, self._view, self._got = "header", memoryview(bytearray(FRAME.size)), 0
        self._frame_started: float | None = None
        self._frames = 0  # complete versions received

    async def next(self, stall_timeout_s: float) -> Pushed | None:
        """The newest complete version not taken yet, waiting for one; None when the service closed the
        connection between frames. ``FetchError`` for a refusal, a malformed or cut frame, or a frame
        begun more than ``stall_timeout_s`` ago and not finished."""
        while True:
            if self._ready is not None:
                ready, self._ready = self._ready, None
                return ready
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), stall_timeout_s)
            except TimeoutError:
                started = self._frame_started
                if started is not None and time.monotonic() - started > stall_timeout_s:
                    self._fail(FetchError(f"a pushed version not complete within {stall_timeout_s} s"))

    def release(self, payload: memoryview) -> None:
        """Hand a taken payload's buffer back for the next version of the same size."""
        self._spare = payload

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._got :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._got == 0 and self._stage == "header":
            self._frame_started = time.monotonic()
        self._got += nbytes
        if self._got == len(self._view) and self._error is None:
            self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        # A clean close after a version, between versions, is the service stopping; anything else
        # (a reset, a cut frame, a close before any version) is a data plane that does not work.
        if exc is not None or self._frame_started is not None or not self._frames:
            self._fail(FetchError(f"push connection lost after {self._frames} versions: {exc!r}"))
        self._eof = True
        self._wakeup.set()

    def _advance(self) -> None:
        """The current stage's buffer is full: parse it and set up the next."""
        if self._stage == "header":
            magic, status, version, length, sha, fp_len = FRAME.unpack(self._view)
            if magic != PUSH_MAGIC:
                self._fail(FetchError(f"bad frame magic {magic!r}"))
            elif status != Status.OK:
                self._fail(FetchError(f"data plane answered status {status}", _status(status)))
            elif length > self.max_bytes:
                self._fail(
                    FetchError(f"a pushed version of {length} bytes, more than {self.max_bytes}", reason="too_large")
                )
            else:
                self._header = (version, length, sha.hex(), fp_len)
                self._stage, self._view, self._got = "fingerprint", memoryview(bytearray(fp_len)), 0
                if fp_len == 0:
                    self._advance()
        elif self._stage == "fingerprint":
            self._fingerprint = bytes(self._view).decode(errors="replace")
            length = self._header[1]
            spare, self._spare = self._spare, None
            buffer = spare if spare is not None and len(spare) == length else memoryview(bytearray(length))
            self._stage, self._view, self._got = "payload", buffer, 0
            if length == 0:
                self._advance()
        else:
            version, _, sha, _ = self._header
            if self._ready is not None:
                self._spare = self._ready.payload  # superseded before it was taken
            self._ready = Pushed(version, self._fingerprint, sha, self._view)
            self._stage, self._view, self._got = "header", memoryview(bytearray(FRAME.size)), 0
            self._frame_started, self._frames = None, self._frames + 1
            self._wakeup.set()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._frame_started = None
        self._wakeup.set()
        self.close()
