"""``EnvClient``: one ``EnvBatch`` speaking ``impala.actorpool.v1`` to an ActorPool, reconnecting forever.

A stream is Hello → Welcome, then Step → Actions in strict turn (docs/protocol.md). Failure handling:

* ``UNAUTHENTICATED``, ``PERMISSION_DENIED``, ``FAILED_PRECONDITION``, ``INVALID_ARGUMENT``,
  ``UNIMPLEMENTED``, and ``RESOURCE_EXHAUSTED`` for a message over the size limit: retrying cannot
  help, so ``run`` raises ``ClientError`` naming the status.
* anything else (``UNAVAILABLE`` from a draining or unreachable pool, ``RESOURCE_EXHAUSTED``,
  ``DEADLINE_EXCEEDED``, a lost connection): log one line, wait a capped exponential backoff with
  full jitter, dial again on a fresh channel (which may land on another replica). The pool treated
  the broken stream as a truncation of every env, so the client resets all its envs first, unless
  the pool asked it to resume (``impala.core.stream_end``: a drain or a stream past the pool's
  ``max_connection_age_s``): then it dials at once and sends the observations of the Step the pool
  recorded and did not answer, so no env step is lost and no episode restarts. Before
  the first ``Welcome`` the attempts are bounded (``connect_attempts``; a wrong address must not
  retry forever) and ``run`` raises ``UnreachableError``; after it the client reconnects forever,
  as pool restarts and rebalancing need.

Reset-by-reconnect (``reconnect_on_reset``, one env): at each episode end the client sends one last
Step (with ``terminated`` only when the episode truly terminated; a truncated episode sends its last
observation with both flags false, because closing the stream is the truncation), reads the Actions
that answer it, closes the stream and dials a new one with the next episode's first observation.

Stopping (``stop`` set, e.g. by SIGTERM, or ``max_steps`` reached) finishes the current exchange and
closes the stream cleanly; a pool that holds its reply (paused) gets ``stop_grace_s`` before the call
is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import grpc
import numpy as np

from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.client import wire
from impala.client.settings import ClientSettings
from impala.client.simulator import Array, BatchStep, EnvBatch, action_space
from impala.core.backoff import Backoff
from impala.core.stream_end import asks_to_resume

log = logging.getLogger(__name__)

FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

Call = grpc.aio.StreamStreamCall[actorpool_pb2.EnvMessage, actorpool_pb2.AgentMessage]


class ClientError(RuntimeError):
    """The pool refused this client for a reason that retrying cannot fix."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class UnreachableError(ClientError):
    """No stream was ever welcomed: the address is wrong, or no pool listens there."""

    def __init__(self, address: str, attempts: int, last: str) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            f"no ActorPool answered at {address} after {attempts} attempts (last: {last}); "
            "check --address (host:port) and that the pool is running",
        )
        self.address, self.attempts = address, attempts


class _StreamLostError(Exception):
    """The pool ended the stream without an error status while the client still wanted actions."""


@dataclass
class ClientStats:
    """What a run did. ``streams`` counts Welcomes received, ``failures`` the streams or dials that failed."""

    env_steps: int = 0
    episodes: int = 0
    streams: int = 0
    failures: int = 0
    resumed: int = 0  # streams the pool ended asking to resume (drain, max connection age)
    policy_version: int = -1
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    def return_mean(self) -> float:
        """Mean return of the last 100 finished episodes (NaN before the first)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")


class EnvClient:
    """Steps ``batch`` with the actions of the ActorPool at ``config.address``.

    Args:
        batch: the E envs; ``reconnect_on_reset`` needs E = 1.
        config: address, credentials, limits (its env fields are ``impala env``'s, unused here).
        backoff: reconnect delays (inject a seeded one in tests).
    """

    def __init__(self, batch: EnvBatch, config: ClientSettings, *, backoff: Backoff | None = None) -> None:
        if config.reconnect_on_reset and batch.num_envs != 1:
            raise ValueError(f"reconnect_on_reset runs one env per stream, got num_envs={batch.num_envs}")
        self.batch, self.config = batch, config
        self.backoff = backoff or Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_max_s)
        self.stats = ClientStats()
        token = config.bearer_token()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._name, self._ca = config.stream_name(), config.ca_pem()
        self._stop = asyncio.Event()
        self._returns = np.zeros(batch.num_envs, np.float64)
        self._window = (time.monotonic(), 0)
        self._unanswered: Array | None = None  # observations of the Step sent last and not yet answered

    async def run(self, stop: asyncio.Event | None = None) -> ClientStats:
        """Run until ``stop`` is set or ``max_steps`` env steps are done; raises ``ClientError``."""
        self._stop = stop if stop is not None else asyncio.Event()
        obs: Array | None = None
        while not self._finished():
            if obs is None:
                obs = self.batch.reset()
                self._returns[:] = 0.0
            try:
                async with self._channel() as channel:
                    while obs is not None and not self._finished():
                        obs = await self._stream(channel, obs)
            except (grpc.aio.AioRpcError, _StreamLostError, asyncio.InvalidStateError) as err:
                # InvalidStateError: grpc.aio's answer to a write on a stream the pool already ended with OK.
                if isinstance(err, grpc.aio.AioRpcError) and asks_to_resume(err.trailing_metadata()):
                    self.stats.resumed += 1
                    log.info("pool ended the stream to rebalance; resuming", extra={"detail": err.details()})
                    obs = self._unanswered
                else:
                    self._failed(err)
                    obs = None  # the pool truncated every env of the broken stream: start fresh episodes
                await self._wait(self.backoff.next_delay())  # jittered: streams rotated together spread out
        log.info("env client stopped", extra=self._summary())
        return self.stats

    def _finished(self) -> bool:
        limit = self.config.max_steps
        return self._stop.is_set() or (limit > 0 and self.stats.env_steps >= limit)

    def _channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),  # notices a dead pool behind NAT or a load balancer
            ("grpc.keepalive_timeout_ms", 10_000),
            # A fresh connection per channel (gRPC shares them between equal channels of a process): a
            # stream the pool rotated reconnects through the load balancer, which may pick a new replica.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.config.tls_server_name:  # dialing a load balancer's IP, or a port-forward on 127.0.0.1
            options.append(("grpc.ssl_target_name_override", self.config.tls_server_name))
        if self.config.tls or self._ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._ca)
            return grpc.aio.secure_channel(self.config.address, credentials, options=options)
        return grpc.aio.insecure_channel(self.config.address, options=options)

    async def _stream(self, channel: grpc.aio.Channel, obs: Array) -> Array | None:
        """One stream; returns the next episode's first observation when it closed for a reset-by-
        reconnect, None when the client is finished."""
        call: Call = actorpool_pb2_grpc.ActorPoolStub(channel).Connect(metadata=self._metadata)
        self._unanswered = obs
        watchdog = asyncio.ensure_future(self._cancel_after_stop(call))
        try:
            envs, space = self.batch.num_envs, action_space(self.batch)
            await self._write(call, wire.hello(self._name, envs, obs, space))
            reply = await self._read(call)
            if reply is None:  # stopped while dialing
                return None
            welcome = wire.welcome(reply)
            self.stats.streams += 1
            log.info(
                "connected to pool",
                extra={"session": welcome.session_id, "envs": envs, "policy_version": welcome.policy_version},
            )
            message, next_obs, closing = wire.first_step(obs), None, False
            while True:
                await self._write(call, message)
                reply = await self._read(call)
                if reply is None:  # stop grace ran out while the pool held its reply
                    return None
                actions, self.stats.policy_version = wire.actions(reply, envs, space)
                self.backoff.reset()  # a full exchange worked: the next failure starts from base_s again
                if closing or self._stop.is_set():
                    break
                result = self.batch.step(actions)
                self._count(result)
                if self.config.reconnect_on_reset and result.ended[0]:
                    message, next_obs, closing = wire.last_step_before_reconnect(result), result.observation, True
                    self._unanswered = next_obs  # resuming after this Step starts the next episode
                else:
                    message, closing = wire.batch_step(result), self._finished()
                    self._unanswered = result.observation
            await self._close(call)
            return None if self._finished() else next_obs
        finally:
            watchdog.cancel()
            call.cancel()

    async def _write(self, call: Call, message: actorpool_pb2.EnvMessage) -> None:
        try:
            await call.write(message)
        except asyncio.InvalidStateError:
            # The pool already ended the stream (e.g. refused the token before reading Hello): its status,
            # not the failed write, decides whether to retry.
            await self._raise_status(call)
            raise

    async def _read(self, call: Call) -> actorpool_pb2.AgentMessage | None:
        """The next reply; None when the stop watchdog cancelled the call."""
        try:
            reply = await call.read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if call.cancelled() and self._stop.is_set() and task is not None and not task.cancelling():
                return None
            raise
        if reply is grpc.aio.EOF:
            await self._raise_status(call)
        assert isinstance(reply, actorpool_pb2.AgentMessage)
        return reply

    @staticmethod
    async def _raise_status(call: Call) -> None:
        code = await call.code()
        if code != grpc.StatusCode.OK:
            # grpc.aio raises on read() for most errors; this covers a status that arrives after EOF.
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), await call.details())
        raise _StreamLostError("the pool closed the stream with OK while actions were expected")

    async def _close(self, call: Call) -> None:
        """Half-close and wait for the pool's status (bounded: a stuck pool must not block a stop).
        Every Step sent was answered by then, so a failure here loses nothing and is only logged."""
        try:
            await call.done_writing()
            async with asyncio.timeout(self.config.stop_grace_s):
                code = await call.code()
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        except grpc.aio.AioRpcError as err:
            code = err.code()
        except asyncio.InvalidStateError:
            code = await call.code()
        if code != grpc.StatusCode.OK:
            log.info("stream closed with a status", extra={"code": code.name})

    async def _cancel_after_stop(self, call: Call) -> None:
        await self._stop.wait()
        await asyncio.sleep(self.config.stop_grace_s)
        call.cancel()

    async def _wait(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    def _failed(self, err: Exception) -> None:
        if isinstance(err, grpc.aio.AioRpcError):
            code, details = err.code(), err.details() or ""
        else:
            code, details = grpc.StatusCode.UNAVAILABLE, str(err)
        if code in FATAL_CODES or _message_too_large(code, details):
            log.error("pool refused this client", extra={"code": code.name, "detail": details})
            raise ClientError(code, details) from None
        self.stats.failures += 1
        attempts = self.config.connect_attempts
        if self.stats.streams == 0 and attempts and self.stats.failures >= attempts:
            raise UnreachableError(self.config.address, attempts, f"{code.name}: {details}") from None
        log.warning(
            "stream failed; reconnecting after backoff",
            extra={"code": code.name, "detail": details, "failures": self.backoff.failures + 1},
        )

    def _count(self, result: BatchStep) -> None:
        self.stats.env_steps += self.batch.num_envs
        self._returns += result.reward
        ended = result.ended
        if ended.any():
            self.stats.episodes += int(ended.sum())
            self.stats.recent_returns.extend(self._returns[ended].tolist())
            self._returns[ended] = 0.0
        started, steps = self._window
        now = time.monotonic()
        if now - started >= self.config.log_interval_s:
            rate = (self.stats.env_steps - steps) / (now - started)
            log.info("env steps", extra={"env_steps_per_second": round(rate, 1), **self._summary()})
            self._window = (now, self.stats.env_steps)

    def _summary(self) -> dict[str, float | int]:
        s = self.stats
        return {
            "env_steps": s.env_steps,
            "episodes": s.episodes,
            "episode_return_mean": round(s.return_mean(), 3),
            "streams": s.streams,
            "failures": s.failures,
            "policy_version": s.policy_version,
        }


def _message_too_large(code: grpc.StatusCode, details: str) -> bool:
    """gRPC's own size check: the same Step would fail again, so this RESOURCE_EXHAUSTED is fatal
    (lower num_envs), unlike the pool's "too many clients" one."""
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
