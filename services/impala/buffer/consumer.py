"""Rollout consumer: the learner's side of the Redis Streams buffer (sync, thread-safe).

At-least-once: entries are read into the consumer group ``learners`` and stay pending until the
learner calls ``ack`` after the optimizer step that used them; ``ack`` then deletes them
(``XACK`` + ``XDEL``), which frees their memory. A learner that dies keeps its entries pending: its
successor under the same consumer name reads them back at once (its own pending list), any other
consumer takes them over with ``XAUTOCLAIM`` once they have been idle ``claim_idle_s``.

Connection loss never raises: every call retries with backoff until Redis answers or ``close()``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.typing import StreamIdT

from impala.core.backoff import Backoff
from impala.core.redis_client import TRANSIENT_ERRORS, sync_client
from impala.core.redis_keys import LEARNER_GROUP, RunKeys
from impala.core.redis_records import RunCounters, text

log = logging.getLogger(__name__)

T = TypeVar("T")

# XACK then XDEL, counting only the entries this call acknowledged: when two learners both processed
# an entry (a reclaim raced a slow learner) it is counted once. KEYS: stream, counters hash.
_ACK_SCRIPT = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], unpack(ARGV, 3))
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], n) end
return n
"""
_ACK_BATCH = 1000  # ids per script call (Lua's unpack limit is ~8000)


class ConsumerClosedError(RuntimeError):
    """The call could not finish because ``close()`` was called while Redis was unreachable."""


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id (for ``ack``/``drop``) and the serialized Rollout."""

    id: str
    payload: bytes


class RolloutConsumer:
    """Reads rollouts of one run as ``consumer`` in the group ``learners``.

    Args:
        redis_url: ``redis://`` or ``rediss://`` URL.
        keys: key names of the run.
        consumer: this learner's name in the group; keep it stable across restarts (pod name).
        claim_idle_s: pending entries of other consumers idle this long are taken over.
        backoff: delays between retries while Redis is unreachable.
    """

    def __init__(
        self,
        redis_url: str,
        keys: RunKeys,
        *,
        consumer: str,
        claim_idle_s: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        if not consumer:
            raise ValueError("consumer name must not be empty")
        self.keys, self.consumer, self.claim_idle_s = keys, consumer, claim_idle_s
        self._client = sync_client(redis_url)
        self._ack_script = self._client.register_script(_ACK_SCRIPT)
        self._backoff = backoff or Backoff()
        self._closed = threading.Event()
        self._recover_lock = threading.Lock()
        self._generation = 0
        self._own_pending_cursor: str | None = "0-0"  # None once our predecessor's entries are re-read
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0
        # Ids handed out and not yet acked/dropped: XAUTOCLAIM cannot skip our own entries, and a paused
        # learner may hold them longer than claim_idle_s; they must not be delivered twice.
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._next_keep = 0.0

    def read(self, count: int, block_ms: int = 1000, *, ack: Sequence[str] = ()) -> list[Entry]:
        """Up to ``count`` entries: first pending ones of a dead predecessor, then new ones, waiting at
        most ``block_ms`` (≤ 5000) for new entries when none is at hand.

        ``ack``: entries learned from since the last read, acknowledged as by ``ack`` before anything is
        read; in the steady state in the same round trip as the read (one pipeline instead of two calls).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.keep_held()
        claim_due = time.monotonic() >= self._next_claim_at
        piggyback = self._own_pending_cursor is None and not claim_due and 0 < len(ack) <= _ACK_BATCH
        if ack and not piggyback:
            self.ack(ack)
        out: list[Entry] = []
        if self._own_pending_cursor is not None:
            out += self._retry("xreadgroup", lambda: self._read_own_pending(count))
        if len(out) < count and claim_due:
            out += self._retry("xautoclaim", lambda: self._autoclaim(count - len(out)))
        if len(out) < count:
            block = None if out else min(max(block_ms, 1), 5000)
            if piggyback:
                with self._held_lock:
                    self._held.difference_update(ack)
                out += self._retry("xreadgroup", functools.partial(self._ack_and_read_new, list(ack), count, block))
            else:
                out += self._retry("xreadgroup", lambda: self._read_new(count - len(out), block))
        with self._held_lock:
            self._held.update(entry.id for entry in out)
        return out

    def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge and delete entries after the step that learned from them; counts
        ``rollouts_consumed``. Returns how many were still pending (already-acked ids are skipped)."""
        return self._finish(ids, RunCounters.field("rollouts_consumed"))

    def drop(self, ids: Sequence[str], reason: str) -> int:
        """Acknowledge and delete entries without learning from them (stale, corrupt); counts
        ``rollouts_dropped`` and logs one line."""
        done = self._finish(ids, RunCounters.field("rollouts_dropped"))
        if ids:
            log.warning("rollouts dropped", extra={"consumer": self.consumer, "reason": reason, "count": len(ids)})
        return done

    def keep_held(self) -> None:
        """Reset the idle time of the entries this consumer holds (read, not yet acked or dropped), at
        most every ``claim_idle_s / 3``: another live consumer (a learner rank whose peers have no batch
        yet) must not reclaim and learn them twice. Called by ``read`` and by a holder that waits."""
        now = time.monotonic()
        if now < self._next_keep:
            return
        self._next_keep = now + self.claim_idle_s / 3
        with self._held_lock:
            held = sorted(self._held)
        for start in range(0, len(held), _ACK_BATCH):
            ids: list[StreamIdT] = list(held[start : start + _ACK_BATCH])
            # JUSTID: the delivery counter stays as it is; ids acked meanwhile are simply not claimed.
            self._retry("xclaim", functools.partial(self._claim_own, ids))

    def _claim_own(self, ids: list[StreamIdT]) -> None:
        self._client.xclaim(self.keys.rollouts, LEARNER_GROUP, self.consumer, 0, ids, justid=True)

    def depth(self) -> int:
        """Entries in the stream (unread plus pending)."""
        return int(self._retry("xlen", lambda: self._client.xlen(self.keys.rollouts)))

    def pending(self) -> int:
        """Entries read by some consumer of the group and not yet acknowledged."""
        summary = self._retry("xpending", lambda: self._with_group(self._pending_summary))
        return int(summary["pending"])

    def close(self) -> None:
        """Stop retrying (calls in a retry loop raise ``ConsumerClosedError``) and disconnect."""
        self._closed.set()
        self._client.close()

    def _pending_summary(self) -> dict[str, Any]:
        return self._client.xpending(self.keys.rollouts, LEARNER_GROUP)

    def _finish(self, ids: Sequence[str], counter: str) -> int:
        with self._held_lock:
            self._held.difference_update(ids)
        done = 0
        for start in range(0, len(ids), _ACK_BATCH):
            batch = list(ids[start : start + _ACK_BATCH])
            done += self._retry("ack", functools.partial(self._run_ack_script, counter, batch))
        return done

    def _run_ack_script(self, counter: str, ids: list[str]) -> int:
        return int(self._ack_script([self.keys.rollouts, self.keys.counters], [LEARNER_GROUP, counter, *ids]))

    def _read_own_pending(self, count: int) -> list[Entry]:
        """Entries this consumer name read before a crash: reading history from an id returns them."""
        cursor = self._own_pending_cursor or "0-0"
        reply: Any = self._with_group(
            lambda: self._client.xreadgroup(LEARNER_GROUP, self.consumer, {self.keys.rollouts: cursor}, count=count)
        )
        raw = reply[0][1] if reply else []
        if not raw:
            self._own_pending_cursor = None
            return []
        self._own_pending_cursor = text(raw[-1][0])
        log.info("re-reading own pending entries", extra={"consumer": self.consumer, "count": len(raw)})
        return self._entries(raw)

    def _autoclaim(self, count: int) -> list[Entry]:
        """Take over entries idle longer than ``claim_idle_s`` from other (dead) consumers."""
        out: list[Entry] = []
        while len(out) < count:
            reply = self._with_group(functools.partial(self._claim_page, count - len(out)))
            self._claim_cursor = text(reply[0])
            with self._held_lock:
                out += [entry for entry in self._entries(reply[1]) if entry.id not in self._held]
            if self._claim_cursor == "0-0":
                # Scanned the whole pending list: look again in half an idle period.
                self._next_claim_at = time.monotonic() + self.claim_idle_s / 2
                break
        if out:
            log.info("reclaimed pending entries", extra={"consumer": self.consumer, "count": len(out)})
        return out

    def _claim_page(self, count: int) -> Any:
        return self._client.xautoclaim(
            self.keys.rollouts,
            LEARNER_GROUP,
            self.consumer,
            min_idle_time=int(self.claim_idle_s * 1000),
            start_id=self._claim_cursor,
            count=count,
        )

    def _read_new(self, count: int, block_ms: int | None) -> list[Entry]:
        reply: Any = self._with_group(
            lambda: self._client.xreadgroup(
                LEARNER_GROUP, self.consumer, {self.keys.rollouts: ">"}, count=count, block=block_ms
            )
        )
        return self._entries(reply[0][1]) if reply else []

    def _ack_and_read_new(self, ids: list[str], count: int, block_ms: int | None) -> list[Entry]:
        """The ack script and the read in one pipeline (a retry re-acks: acking twice counts once)."""

        def both() -> Any:
            pipe = self._client.pipeline(transaction=False)
            # EVAL, not the registered script's EVALSHA: a pipeline holding a Script object first asks
            # SCRIPT EXISTS in a round trip of its own.
            pipe.eval(
                _ACK_SCRIPT,
                2,
                self.keys.rollouts,
                self.keys.counters,
                LEARNER_GROUP,
                RunCounters.field("rollouts_consumed"),
                *ids,
            )
            pipe.xreadgroup(LEARNER_GROUP, self.consumer, {self.keys.rollouts: ">"}, count=count, block=block_ms)
            return pipe.execute()[1]

        reply: Any = self._with_group(both)
        return self._entries(reply[0][1]) if reply else []

    def _entries(self, raw: Any) -> list[Entry]:
        out: list[Entry] = []
        gone: list[str] = []
        for entry_id, fields in raw:
            if entry_id is None:
                continue
            payload = fields.get(b"r") if fields else None
            if payload is None:
                gone.append(text(entry_id))  # pending, but its data was deleted outside this code
            else:
                out.append(Entry(text(entry_id), payload))
        if gone:
            self._client.xack(self.keys.rollouts, LEARNER_GROUP, *gone)
            log.warning("pending entries without data acknowledged", extra={"consumer": self.consumer, "ids": gone})
        return out

    def _with_group(self, call: Callable[[], T]) -> T:
        """Run ``call``; if the group is missing (new run, or Redis lost its data) create it and rerun."""
        try:
            return call()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        self._create_group()
        return call()

    def _create_group(self) -> None:
        try:
            # Start at 0: rollouts the pools wrote before the first learner came up are learned from too.
            self._client.xgroup_create(self.keys.rollouts, LEARNER_GROUP, id="0", mkstream=True)
            log.info("consumer group created", extra={"stream": self.keys.rollouts, "group": LEARNER_GROUP})
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _retry(self, op: str, call: Callable[[], T]) -> T:
        while True:
            generation = self._generation
            try:
                return call()
            except TRANSIENT_ERRORS as exc:
                self._recover(op, exc, generation)

    def _recover(self, op: str, exc: Exception, generation: int) -> None:
        """Probe Redis with backoff until it answers; concurrent failures wait for one prober."""
        with self._recover_lock:
            if self._closed.is_set():
                raise ConsumerClosedError(f"consumer closed while Redis was unreachable ({op}: {exc})")
            if generation != self._generation:
                return
            error: Exception = exc
            while True:
                log.warning(
                    "redis unreachable, retrying",
                    extra={
                        "consumer": self.consumer,
                        "op": op,
                        "error": repr(error),
                        "retry_within_s": self._backoff.ceiling(),
                    },
                )
                if self._backoff.sleep(self._closed):
                    raise ConsumerClosedError(f"consumer closed while Redis was unreachable ({op}: {error})")
                try:
                    self._client.ping()
                    break
                except TRANSIENT_ERRORS as again:
                    error = again
            self._backoff.reset()
            self._generation += 1
            log.info("redis reachable again", extra={"consumer": self.consumer})
