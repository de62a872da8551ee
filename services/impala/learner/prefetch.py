"""Batch preparation: read B entries from the buffer, decode, drop what cannot be learned from, and
collate into a reused batch. ``BatchFiller`` is the synchronous core; ``impala.learner.decode_process``
runs it in a separate process so that the training loop never shares the GIL with it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from impala.core.batch import Batch
from impala.learner.batch_decoding import BatchDecoder, Column

log = logging.getLogger(__name__)

B = TypeVar("B")


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
    slot: int = -1  # which shared buffer holds the batch (decode process); -1 when not shared


class BatchSource(Protocol[B]):
    """What the training loop takes batches from (``DecodeProcess``)."""

    def start(self) -> None: ...
    def stop(self, timeout_s: float = ...) -> None: ...
    def get(self, timeout_s: float) -> Prepared[B] | None: ...
    def ack(self, ids: Sequence[str]) -> int: ...
    def recycle(self, prepared: Prepared[B]) -> None: ...


class BatchFiller:
    """Reads until ``batch_size`` learnable rollouts are decoded into a batch.

    Args:
        consumer: the rollout buffer (``read``/``drop``).
        decoder: writes entries into batch columns and says which it refused (corrupt, stale).
        batch_size: B.
        max_policy_lag: drop rollouts whose lag exceeds this (0 keeps all).
        on_drop: called with (reason, count) after entries were dropped (metrics).
        block_ms: longest wait of one buffer read.
    """

    def __init__(
        self,
        consumer: ConsumerLike,
        *,
        decoder: BatchDecoder,
        batch_size: int,
        max_policy_lag: int,
        on_drop: Callable[[str, int], None],
        block_ms: int = 200,
    ) -> None:
        self.consumer, self.decoder = consumer, decoder
        self.batch_size, self.max_policy_lag = batch_size, max_policy_lag
        self._on_drop, self.block_ms = on_drop, block_ms

    def fill(
        self, out: Batch, current_version: Callable[[], int], stopping: Callable[[], bool]
    ) -> Prepared[Batch] | None:
        """Read until B learnable rollouts are decoded into ``out``; None when ``stopping()`` turns
        true first (what was read stays pending: a successor re-reads it). ``current_version()`` is
        the learner's policy version now, asked after each read."""
        ids: list[str | None] = [None] * self.batch_size
        columns: list[Column | None] = [None] * self.batch_size
        episodes: list[tuple[float, int]] = []  # of stale rollouts, counted though not learned from
        while missing := [b for b, column in enumerate(columns) if column is None]:
            if stopping():
                return None
            entries = self.consumer.read(len(missing), block_ms=self.block_ms)
            if not entries:
                continue
            targets = missing[: len(entries)]
            is_stale = functools.partial(self._is_stale, current_version())
            results = self.decoder.decode_into(out, targets, [e.payload for e in entries], is_stale=is_stale)
            dropped: dict[str, list[str]] = {}
            for b, entry, result in zip(targets, entries, results, strict=True):
                if isinstance(result, Column):
                    ids[b], columns[b] = entry.id, result
                    continue
                dropped.setdefault(result.reason, []).append(entry.id)
                episodes += zip(result.episode_returns, result.episode_lengths, strict=True)
                if result.error:
                    log.warning("corrupt rollout", extra={"entry": entry.id, "error": result.error})
            for reason, refused in dropped.items():
                self.consumer.drop(refused, reason)
                self._on_drop(reason, len(refused))
        accepted = [c for c in columns if c is not None]
        out.episode_returns = [r for c in accepted for r in c.episode_returns] + [r for r, _ in episodes]
        out.episode_lengths = [n for c in accepted for n in c.episode_lengths] + [n for _, n in episodes]
        return Prepared(
            batch=out,
            ids=[i for i in ids if i is not None],
            env_steps=sum(c.length for c in accepted),
            versions=[c.policy_version for c in accepted],
        )

    def _is_stale(self, now: int, version: int) -> bool:
        return self.max_policy_lag > 0 and now - version > self.max_policy_lag
