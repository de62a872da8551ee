"""The thin ``impala.actorpool.v1.ActorPool`` servicer: admission, then one ``Session`` per stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from impala.actorpool.errors import StreamError
from impala.actorpool.session import Context, PoolShared, Session
from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core.stream_end import RESUME_METADATA

log = logging.getLogger(__name__)


class ActorPoolServicer(actorpool_pb2_grpc.ActorPoolServicer):
    def __init__(self, pool: PoolShared, *, max_clients: int) -> None:
        self.pool, self.max_clients = pool, max_clients
        self.sessions: set[Session] = set()
        self.idle = asyncio.Event()  # set while no stream is open
        self.idle.set()
        self.connected = 0

    async def Connect(  # type: ignore[override]  # noqa: N802  (reads and writes through the context)
        self, request_iterator: AsyncIterator[actorpool_pb2.EnvMessage], context: Context
    ) -> None:
        if self.pool.draining.is_set():
            await self._reject(context, StreamError(grpc.StatusCode.UNAVAILABLE, "draining", _DRAINING, resume=True))
        if len(self.sessions) >= self.max_clients:
            message = f"pool is at its limit of {self.max_clients} client streams; retry with backoff"
            await self._reject(context, StreamError(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_clients", message))
        session = Session(context, self.pool)
        self.sessions.add(session)
        self.idle.clear()
        # A client that half-closes and then cancels can leave context.read() waiting forever; when the
        # RPC is over for gRPC, end the handler too (its finally still ships the partial rollouts).
        handler = session.task = asyncio.current_task()
        done = False

        def rpc_over(_context: Context) -> None:
            if not done and handler is not None:
                handler.cancel()

        context.add_done_callback(rpc_over)  # type: ignore[arg-type]  # the stub wants a nominal class
        error: StreamError | None = None
        handshaken = False
        try:
            await session.handshake()
            handshaken = True
            self.connected += 1
            self.pool.metrics.connected_clients.inc()
            log.info(
                "client connected",
                extra={"session": session.session_id, "envs": session.num_envs, "peer": context.peer()},
            )
            await session.run()
        except StreamError as err:
            error = err
        finally:
            done = True
            try:
                # Shielded: a second cancel (gRPC cancels again when the RPC ends) must not lose partials.
                await asyncio.shield(session.finish())
            finally:
                self.sessions.discard(session)
                if not self.sessions:
                    self.idle.set()
                if handshaken:
                    self.connected -= 1
                    self.pool.metrics.connected_clients.dec()
        if error is None and self.pool.draining.is_set():
            error = StreamError(grpc.StatusCode.UNAVAILABLE, "draining", _DRAINING, resume=True)
        if error is not None:
            await self._reject(context, error, session.session_id)
        log.info("client disconnected", extra={"session": session.session_id})

    async def _reject(self, context: Context, error: StreamError, session_id: str = "") -> None:
        self.pool.metrics.rejected_streams.labels(code=error.code.name, reason=error.reason).inc()
        if error.reason not in ("draining", "max_age"):
            log.warning(
                "stream refused",
                extra={"session": session_id, "code": error.code.name, "reason": error.reason, "detail": error.message},
            )
        await context.abort(error.code, error.message, trailing_metadata=RESUME_METADATA if error.resume else ())

    async def expire_late_reads(self, tick_s: float) -> None:
        """Every ``tick_s``, end the streams whose awaited message is past its timeout
        (``Session.expire``): a stream is dropped between its timeout and its timeout plus ``tick_s``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick_s)
            now = loop.time()
            for session in list(self.sessions):
                session.expire(now)

    def waiting_streams(self) -> int:
        return max(1, self.connected)


_DRAINING = "pool is draining (shutting down); reconnect, possibly to another replica"
