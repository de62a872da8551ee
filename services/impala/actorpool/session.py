"""One client stream: handshake, then step → batched inference → actions, building rollouts.

The handler reads, infers and replies strictly in turn, so at any moment at most one inference is in
flight per stream. When the stream ends for any reason (close, cancel, deadline, drain, bad input
after the handshake) ``finish`` ships every env slot's partial rollout, truncated at its last
observation; nothing a client sent is silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from impala.actorpool.batcher import DynamicBatcher, State
from impala.actorpool.control import PoolControl
from impala.actorpool.errors import StreamError
from impala.actorpool.metrics import PoolMetrics
from impala.actorpool.policy import ActResult
from impala.actorpool.rollout_builder import StreamRollouts
from impala.actorpool.sinks import RolloutSink
from impala.actorpool.v1 import actorpool_pb2
from impala.actorpool.validation import EnvSpec, StepChecker, StepInput, check_hello, unexpected
from impala.buffer.producer import ProducerClosedError
from impala.core import tensors

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[actorpool_pb2.EnvMessage, actorpool_pb2.AgentMessage]


# Stands for bytes that did not parse as an EnvMessage (see server.parse_env_message).
MALFORMED = actorpool_pb2.EnvMessage()


@dataclass
class PoolStats:
    """Pool-wide counters for the status heartbeat (the metrics hold the same numbers)."""

    env_steps: int = 0
    rollouts_produced: int = 0
    rollouts_shed: int = 0


@dataclass(frozen=True)
class SessionConfig:
    unroll_length: int
    max_envs: int
    handshake_timeout_s: float
    idle_timeout_s: float
    pool_id: str
    max_age_s: float = 0.0  # 0 = streams live forever
    max_age_grace_s: float = 30.0


@dataclass(frozen=True)
class PoolShared:
    """What every stream of one pool shares; the servicer owns it."""

    config: SessionConfig
    spec: EnvSpec
    batcher: DynamicBatcher
    sink: RolloutSink
    control: PoolControl
    metrics: PoolMetrics
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    stats: PoolStats = field(default_factory=PoolStats)


class Session:
    def __init__(self, context: Context, pool: PoolShared) -> None:
        self.context, self.pool = context, pool
        self.session_id = uuid.uuid4().hex[:16]
        self.num_envs = 0
        self.rollouts: StreamRollouts | None = None
        self.state: State = ()
        self.last_values: npt.NDArray[np.float32] | None = None
        self.checker: StepChecker | None = None
        # One reply message per stream, refilled every step (gRPC serializes it inside ``write``).
        self.reply = actorpool_pb2.AgentMessage()
        # Read timeouts: ``_read`` sets the loop time by which its message must arrive, and the pool's
        # sweeper (``expire``) ends the stream's handler task when it is late. One timer per read
        # (``asyncio.timeout``) cost ~15% of a bare echo's throughput.
        self.task: asyncio.Task[Any] | None = None  # the stream's handler; the servicer sets it
        self.read_deadline = math.inf
        self._timed_out = False
        self._aged_out = False
        self._loop = asyncio.get_running_loop()
        # Rebalancing: past its age (jittered ±10%, as gRPC's max_connection_age, so streams opened
        # together do not all move at once) the stream ends at its next Step, which it records and does
        # not answer; the client resumes from it on a new stream, maybe on a new replica.
        age = pool.config.max_age_s
        self.expires_at = self._loop.time() + age * random.uniform(0.9, 1.1) if age > 0 else math.inf

    async def handshake(self) -> None:
        msg = await self._read(self.pool.config.handshake_timeout_s, "Hello")
        if msg is None or msg.WhichOneof("kind") != "hello":
            raise unexpected("the first message of a stream must be Hello")
        check_hello(msg.hello, self.pool.spec, self.pool.config.max_envs)
        E = self.num_envs = msg.hello.num_envs
        policy = self.pool.batcher.policy
        self.state = policy.initial_state(E)
        self.checker = StepChecker(self.pool.spec, E)
        space = self.pool.spec.action
        tensors.encode(np.zeros((E, *space.shape_per_env), dtype=space.dtype), out=self.reply.actions.actions)
        self.rollouts = StreamRollouts(
            unroll_length=self.pool.config.unroll_length,
            num_envs=E,
            observation_shape=self.pool.spec.observation_shape,
            observation_dtype=self.pool.spec.observation_dtype,
            action_space=self.pool.spec.action,
            state_shapes=policy.state_shapes,
            producer_id=self.pool.config.pool_id,
            session_id=self.session_id,
        )
        welcome = actorpool_pb2.Welcome(
            session_id=self.session_id,
            unroll_length=self.pool.config.unroll_length,
            policy_version=policy.version,
            max_envs=self.pool.config.max_envs,
        )
        await self.context.write(actorpool_pb2.AgentMessage(welcome=welcome))

    async def run(self) -> None:
        """Serve steps until the client closes the stream or the pool drains."""
        first = True
        assert self.checker is not None
        while not self.pool.draining.is_set():
            msg = await self._read(self.pool.config.idle_timeout_s, "Step")
            if msg is None:
                return
            received = time.perf_counter()
            if msg.WhichOneof("kind") != "step":
                raise unexpected("Hello may be sent only once, as the first message")
            step = self.checker.check(msg.step, first=first)
            state_in = self._reset(self.state, step.ended) if step.any_ended else self.state
            try:
                result = await self._infer(step, state_in)
            except asyncio.CancelledError:
                # Cancelled mid-inference (client cancel, server stop): run it again, shielded, so this
                # step's transition is still recorded before the partial rollout ships.
                await self._record(step, await asyncio.shield(self._infer(step, state_in)), state_in, first)
                raise
            # Recorded before the reply: a full buffer holds this reply (backpressure), and streams stay
            # in step with each other, which keeps inference batches full (docs/adr/0012-inline-acting.md).
            await self._record(step, result, state_in, first)
            if self._loop.time() >= self.expires_at:
                raise StreamError(grpc.StatusCode.UNAVAILABLE, "max_age", _MAX_AGE, resume=True)
            if not await self._reply(result, received):
                return  # recorded; the stream ends with UNAVAILABLE instead of a reply
            first = False

    async def _reply(self, result: ActResult, received: float) -> bool:
        """Send the actions (held while paused); False, sending nothing, when the pool drains."""
        if self.pool.draining.is_set():
            return False
        if self.pool.control.paused:
            await self.pool.control.wait_running()
        actions = self.reply.actions
        # Box samples go out clipped to the bounds; the rollout keeps the unclipped one (docs/protocol.md).
        action = self.pool.spec.action.clip(result.action[: self.num_envs])
        actions.actions.data = action.astype(action.dtype.newbyteorder("<"), copy=False).tobytes()
        actions.policy_version = result.version
        await self.context.write(self.reply)
        self.pool.metrics.action_latency.observe(time.perf_counter() - received)
        return True

    async def finish(self) -> None:
        """Ship every slot's partial rollout (truncated at the last observation)."""
        if self.rollouts is not None and self.last_values is not None:
            await self._ship(self.rollouts.close(self.last_values), partial=True)
            self.rollouts = None

    def expire(self, now: float) -> None:
        """End the stream when the message it waits for is late, or when it is past its age and its grace
        while it waits for a Step (called by the pool's sweeper)."""
        if self.task is None or self._timed_out:
            return
        late = now >= self.read_deadline
        self._aged_out = not late and now >= self.expires_at + self.pool.config.max_age_grace_s
        if late or (self._aged_out and self.read_deadline < math.inf):
            self._timed_out = True
            self.task.cancel()

    async def _read(self, timeout_s: float, what: str) -> actorpool_pb2.EnvMessage | None:
        self.read_deadline = self._loop.time() + timeout_s
        try:
            msg: Any = await self.context.read()
        except asyncio.CancelledError:
            if not self._timed_out or self.task is None:
                raise
            self.task.uncancel()  # this cancellation was ours: it ends as a timeout, not a cancel
            if self._aged_out:  # the step in flight is not recorded: the client starts fresh episodes
                raise StreamError(grpc.StatusCode.UNAVAILABLE, "max_age", _MAX_AGE) from None
            raise StreamError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", f"no {what} received within {timeout_s:g}s"
            ) from None
        finally:
            self.read_deadline = math.inf
        if msg is grpc.aio.EOF:
            return None
        if msg is MALFORMED:
            raise unexpected("message could not be parsed as impala.actorpool.v1.EnvMessage")
        if not isinstance(msg, actorpool_pb2.EnvMessage) or msg.WhichOneof("kind") is None:
            raise unexpected("EnvMessage has neither hello nor step set")
        return msg

    async def _infer(self, step: StepInput, state_in: State) -> ActResult:
        E = self.num_envs
        obs, done, state = step.observation, step.ended, state_in
        if step.any_truncated:
            # V(final observation) of truncated episodes, with the state of the episode that ended.
            assert step.final_observation is not None
            pick = step.truncated[step.ended]
            truncated_rows = np.flatnonzero(step.truncated)
            obs = np.concatenate([obs, step.final_observation[pick]])
            done = np.concatenate([done, np.zeros(len(truncated_rows), dtype=np.bool_)])
            state = tuple(np.concatenate([s, old[truncated_rows]]) for s, old in zip(state, self.state, strict=True))
        try:
            result = await self.pool.batcher.infer(obs, done, state)
        except Exception as err:  # the model failed on the whole batch (logged once by the batcher)
            raise StreamError(grpc.StatusCode.INTERNAL, "inference", f"inference failed: {err}") from err
        assert result.action.shape[0] >= E
        return result

    async def _record(self, step: StepInput, result: ActResult, state_in: State, first: bool) -> None:
        """Record the transition into this step and the action taken at it, then ship what completed.
        Everything before the one await is synchronous, so a cancel cannot leave the builder half done."""
        assert self.rollouts is not None
        E = self.num_envs
        payloads: list[bytes] = []
        if not first:
            if step.any_ended:
                bootstrap = np.zeros(E, dtype=np.float32)
                if len(result.baseline) > E:  # V(final observation) of the truncated slots follows the E rows
                    bootstrap[step.truncated] = result.baseline[E:]
                payloads = self.rollouts.transition(
                    step.reward, step.terminated, step.truncated, bootstrap, step.observation
                )
            else:
                payloads = self.rollouts.transition_without_ends(step.reward, step.observation)
            self.pool.metrics.env_steps.inc(E)
            self.pool.stats.env_steps += E
        self.rollouts.act(
            step.observation, result.action[:E], result.logits[:E], result.log_prob[:E], result.version, state_in
        )
        self.state = tuple(s[:E] for s in result.state)
        self.last_values = result.baseline[:E]
        if payloads:
            await self._ship(payloads, partial=False)

    @staticmethod
    def _reset(state: State, ended: npt.NDArray[np.bool_]) -> State:
        """The core state with the rows where an episode (re)starts zeroed (called when one does)."""
        if not state:
            return state
        return tuple(np.where(ended.reshape(-1, *([1] * (s.ndim - 1))), 0.0, s).astype(np.float32) for s in state)

    async def _ship(self, payloads: list[bytes], *, partial: bool) -> None:
        """Hand rollouts to the sink, waiting while it is full. A stream cancelled meanwhile (client gone,
        pool stopping) puts them again in a background task, accounted when it ends: nothing is lost
        without a count. (A cancel in the middle of the sink's round trip may store them twice: the
        buffer is at-least-once, as its retries are.) Not a shielded task from the start: a sink that
        stores at once would then cost a pass of the loop, which let streams drift apart (ADR 0012)."""
        if not payloads:
            return
        try:
            stored = await self.pool.sink.put_many(payloads)
        except asyncio.CancelledError:
            put = asyncio.ensure_future(self.pool.sink.put_many(payloads))
            put.add_done_callback(lambda done: self._account(done, len(payloads), partial))
            raise
        except ProducerClosedError:
            stored = self._lost_at_shutdown(len(payloads), partial)
        self._count(stored, len(payloads), partial)

    def _account(self, put: asyncio.Future[int], count: int, partial: bool) -> None:
        """Count a background put once it ended."""
        if put.cancelled():
            log.warning("rollouts lost: shipping cancelled", extra={"session": self.session_id, "rollouts": count})
            stored = 0
        elif isinstance(put.exception(), ProducerClosedError):
            stored = self._lost_at_shutdown(count, partial)
        else:
            stored = put.result()  # any other error is the sink's bug: raise it where it is seen
        self._count(stored, count, partial)

    def _lost_at_shutdown(self, count: int, partial: bool) -> int:
        # The pool is shutting down while the buffer is full: these never reach Redis. Say so.
        log.warning(
            "rollouts lost at shutdown: buffer full",
            extra={"session": self.session_id, "rollouts": count, "partial": partial},
        )
        return 0

    def _count(self, stored: int, count: int, partial: bool) -> None:
        self.pool.metrics.rollouts_produced.labels(partial=str(partial).lower()).inc(stored)
        self.pool.stats.rollouts_produced += stored
        if stored < count:
            self.pool.stats.rollouts_shed += count - stored
            self.pool.metrics.rollouts_shed.inc(count - stored)


_MAX_AGE = "stream reached the pool's max_connection_age_s; reconnect (any replica) and resume"
