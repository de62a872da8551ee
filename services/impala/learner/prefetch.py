"""Background batch preparation: read B entries from the buffer, decode, drop what cannot be learned
from, collate into reused buffers, and hand ready batches to the training loop through a bounded queue.

Buffers rotate through a free list (``depth`` waiting + one being filled + one being learned from),
so collation never allocates after warm-up and a batch's memory is rewritten only after the loop
returned it with ``recycle`` (after its learn step finished).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import DecodeError

from impala.core.rollouts import RolloutRecord
from impala.core.tensors import TensorError
from impala.learner.metrics import LearnerMetrics

log = logging.getLogger(__name__)

B = TypeVar("B")
_POLL_S = 0.1  # how often blocked waits look at the stop flag


class EntryLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class ConsumerLike(Protocol):
    def read(self, count: int, block_ms: int = ...) -> Sequence[EntryLike]: ...
    def drop(self, ids: Sequence[str], reason: str) -> int: ...


@dataclass
class Prepared(Generic[B]):
    """A collated batch and what the loop needs to account for it."""

    batch: B
    ids: list[str]
    env_steps: int  # valid (unmasked) steps, i.e. the sum of the rollout lengths
    versions: list[int]  # oldest acting policy version of each rollout
    episode_returns: list[float] = field(default_factory=list)


class Prefetcher(Generic[B]):
    """Fills batches of ``batch_size`` rollouts on a daemon thread.

    Args:
        consumer: the rollout buffer (``read``/``drop``).
        decode: payload -> record; raises ``TensorError`` (or a protobuf ``DecodeError``) when corrupt.
        collate: (records, reused batch or None) -> batch.
        batch_size: B.
        max_policy_lag: drop rollouts whose lag exceeds this (0 keeps all).
        current_version: the learner's policy version now (read from this thread).
        metrics: drop counters.
        depth: ready batches waiting at most (prefetch).
        block_ms: longest wait of one buffer read.
    """

    def __init__(
        self,
        consumer: ConsumerLike,
        *,
        decode: Callable[[bytes], RolloutRecord],
        collate: Callable[[list[RolloutRecord], B | None], B],
        batch_size: int,
        max_policy_lag: int,
        current_version: Callable[[], int],
        metrics: LearnerMetrics,
        depth: int = 2,
        block_ms: int = 200,
    ) -> None:
        self.consumer, self._decode, self._collate = consumer, decode, collate
        self.batch_size, self.max_policy_lag = batch_size, max_policy_lag
        self._current_version, self.metrics = current_version, metrics
        self.block_ms = block_ms
        self._ready: queue.Queue[Prepared[B]] = queue.Queue(maxsize=depth)
        self._free: queue.Queue[B | None] = queue.Queue()
        for _ in range(depth + 2):
            self._free.put(None)  # None: collate allocates this buffer on first use
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="learner-prefetch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, interrupt: Callable[[], None] | None = None, timeout_s: float = 5.0) -> None:
        """Stop filling; ``interrupt`` (the consumer's ``close``) cuts a read that is retrying short."""
        self._stop.set()
        if interrupt is not None:
            interrupt()
        self._thread.join(timeout_s)

    def get(self, timeout_s: float) -> Prepared[B] | None:
        """The next ready batch, or None after ``timeout_s``; re-raises a crash of the thread."""
        if self._error is not None:
            raise RuntimeError("batch prefetch thread failed") from self._error
        try:
            return self._ready.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def recycle(self, prepared: Prepared[B]) -> None:
        """Give a batch's buffers back once its learn step is over."""
        self._free.put(prepared.batch)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                slot = self._take_free()
                if slot is None:
                    return
                prepared = self._fill(slot[0])
                if prepared is None:
                    return
                while not self._stop.is_set():
                    try:
                        self._ready.put(prepared, timeout=_POLL_S)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:
            if self._stop.is_set():
                return  # the interrupted read of a shutdown
            log.exception("batch prefetch failed")
            self._error = err  # surfaced to the training loop by get()

    def _take_free(self) -> tuple[B | None] | None:
        """A free buffer (in a 1-tuple, as the buffer itself may be None), or None when stopped."""
        while not self._stop.is_set():
            try:
                return (self._free.get(timeout=_POLL_S),)
            except queue.Empty:
                continue
        return None

    def _fill(self, buffer: B | None) -> Prepared[B] | None:
        """Read until B learnable rollouts are at hand (None when stopped first), then collate."""
        records: list[RolloutRecord] = []
        ids: list[str] = []
        while len(records) < self.batch_size:
            if self._stop.is_set():
                return None  # what was read stays pending in the group: a successor re-reads it
            entries = self.consumer.read(self.batch_size - len(records), block_ms=self.block_ms)
            for entry, record in self._screen(entries):
                records.append(record)
                ids.append(entry.id)
        versions = [r.policy_version for r in records]
        return Prepared(
            batch=self._collate(records, buffer),
            ids=ids,
            env_steps=sum(r.length for r in records),
            versions=versions,
            episode_returns=[float(x) for r in records for x in r.episode_returns],
        )

    def _screen(self, entries: Sequence[EntryLike]) -> list[tuple[EntryLike, RolloutRecord]]:
        """Decode; drop corrupt and (when a limit is set) stale entries with a counter and a log line."""
        kept: list[tuple[EntryLike, RolloutRecord]] = []
        dropped: dict[str, list[str]] = {"corrupt": [], "stale": []}
        version = self._current_version()
        for entry in entries:
            try:
                record = self._decode(entry.payload)
            except (TensorError, DecodeError) as err:
                log.warning("corrupt rollout", extra={"entry": entry.id, "error": str(err)})
                dropped["corrupt"].append(entry.id)
                continue
            if self.max_policy_lag > 0 and version - record.policy_version > self.max_policy_lag:
                dropped["stale"].append(entry.id)
                continue
            kept.append((entry, record))
        for reason, ids in dropped.items():
            if ids:
                self.consumer.drop(ids, reason)
                self.metrics.rollouts_dropped.labels(reason=reason).inc(len(ids))
        return kept
