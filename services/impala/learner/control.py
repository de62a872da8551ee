"""The learner's side of the control plane, on its own thread so that a slow update or a Redis
outage never delays the others: polls the run's ``paused`` flag, reads checkpoint commands from the
``commands`` stream, and writes the ``learner_status`` heartbeat.

Checkpoints are taken by the training loop (it owns the parameters); this thread only queues the
requests and writes their results. The id of the last command served is stored with its result in
one transaction, so a command sent while the learner was down is served after its restart and a
command served before a crash is not served twice.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from impala.core.redis_keys import RunKeys
from impala.core.redis_records import CheckpointRecord, Command, LearnerStatus, RunState

log = logging.getLogger(__name__)

POLL_S = 0.2  # the contract asks for a pause poll period of at most 0.25 s


@dataclass(frozen=True)
class CheckpointRequest:
    """A ``checkpoint`` command: ``id`` names it in the checkpoints hash, ``stream_id`` in the stream."""

    id: str
    stream_id: str


class ControlPlane:
    """Pause flag, checkpoint requests and status heartbeat of one learner.

    Args:
        client: a sync Redis client (thread-safe connection pool).
        keys: key names of the run.
        status: returns the learner's counters for the heartbeat (called on this thread).
        status_interval_s: heartbeat period.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RunKeys,
        *,
        status: Callable[[], LearnerStatus],
        status_interval_s: float = 1.0,
    ) -> None:
        self.client, self.keys = client, keys
        self.status_interval_s = status_interval_s
        self.requests: queue.Queue[CheckpointRequest] = queue.Queue()
        self.last_command_id = "0"
        self._status = status
        self._paused = threading.Event()
        self._results: deque[tuple[CheckpointRequest, CheckpointRecord]] = deque()
        self._cursor = "0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner-control", daemon=True)
        self._failing = False

    @property
    def paused(self) -> bool:
        """The run's desired state as last read from Redis (kept through outages)."""
        return self._paused.is_set()

    @property
    def reachable(self) -> bool:
        """False from a failed Redis call of this thread until the next successful poll."""
        return not self._failing

    def start(self) -> None:
        """Read where the previous learner stopped in the command stream, then start polling."""
        try:
            stored: Any = self.client.hget(self.keys.learner_status, LearnerStatus.field("last_command_id"))
        except redis.RedisError as err:
            # Starting from 0 is safe: commands already served are skipped by their stored status.
            log.warning("cannot read last_command_id; rescanning commands", extra={"error": str(err)})
            stored = None
        if stored:
            self.last_command_id = self._cursor = stored.decode()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop polling after flushing queued results and one last heartbeat (best effort)."""
        self._stop.set()
        self._thread.join(timeout_s)
        try:
            self._flush_results()
        except redis.RedisError as err:
            log.warning("checkpoint results not written: redis unreachable", extra={"error": str(err)})
        self._heartbeat()

    def complete(self, request: CheckpointRequest, result: CheckpointRecord) -> None:
        """Record the outcome of ``request`` (written to Redis by this thread, retried through outages)."""
        self._results.append((request, result))

    def _run(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            try:
                self._poll_pause()
                self._poll_commands()
                self._flush_results()
                if self._failing:
                    log.info("control plane reconnected to redis")
                self._failing = False
            except redis.RedisError as err:
                if not self._failing:  # one line per outage; keep the last known pause state meanwhile
                    log.warning("control plane cannot reach redis; retrying", extra={"error": str(err)})
                self._failing = True
            if time.monotonic() >= next_status:
                self._heartbeat()
                next_status = time.monotonic() + self.status_interval_s
            self._stop.wait(POLL_S)

    def _poll_pause(self) -> None:
        paused = RunState.is_paused(self.client.hget(self.keys.state, RunState.field("paused")))
        if paused and not self._paused.is_set():
            log.info("run paused")
            self._paused.set()
        elif not paused and self._paused.is_set():
            log.info("run resumed")
            self._paused.clear()

    def _poll_commands(self) -> None:
        reply: Any = self.client.xread({self.keys.commands: self._cursor}, count=16)
        for _stream, entries in reply or []:
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                self._cursor = stream_id
                request = self._parse(stream_id, fields)
                if request is not None:
                    self.requests.put(request)

    def _parse(self, stream_id: str, fields: Mapping[bytes, bytes]) -> CheckpointRequest | None:
        command = Command.from_fields(fields)
        if command is None or command.cmd != "checkpoint" or not command.id:
            return None  # other commands are for the pools, or malformed; nothing to do here
        stored = self.client.hget(self.keys.checkpoints, command.id)
        if stored and CheckpointRecord.from_json(command.id, stored).status in CheckpointRecord.FINAL:
            return None  # served before a restart whose last_command_id write was lost
        return CheckpointRequest(id=command.id, stream_id=stream_id)

    def _flush_results(self) -> None:
        while self._results:
            request, result = self._results.popleft()
            try:
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.hset(self.keys.checkpoints, request.id, result.to_json())
                    pipe.hset(self.keys.learner_status, LearnerStatus.field("last_command_id"), request.stream_id)
                    pipe.execute()
            except redis.RedisError:
                self._results.appendleft((request, result))  # retried, in order, on the next poll
                raise
            self.last_command_id = request.stream_id

    def _heartbeat(self) -> None:
        status = self._status().model_copy(update={"heartbeat": time.time(), "last_command_id": self.last_command_id})
        # The poller logs outages; the next heartbeat carries fresh values anyway.
        with contextlib.suppress(redis.RedisError):
            self.client.hset(self.keys.learner_status, mapping=status.to_hash())  # type: ignore[arg-type]
