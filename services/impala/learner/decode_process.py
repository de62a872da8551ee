"""Batch preparation in a separate process, so the training loop never shares the GIL with it.

The child reads from Redis, decodes, screens and collates B rollouts straight into one of ``slots``
batches in shared memory (torch's shared storage: freed by the kernel even after a ``kill -9``), and
tells the parent which slot is ready. The parent learns from the slot in place, then sends the
entry ids to acknowledge and the slot back. The child acknowledges before it reads again, so an entry
is acked only after the optimizer step that used it (at-least-once); a slot is rewritten only after
the parent returned it.

Messages over one duplex pipe, parent -> child: ``("free", slots, ids to acknowledge)``,
``("stop", ids to acknowledge)``; child -> parent: ``("ready", slot, ids, env_steps, versions,
episode_returns, episode_lengths)``, ``("dropped", reason, count)``, ``("error", traceback)``. The
learner's policy version (stale rollouts are screened against it) is a shared integer the parent writes
and the child reads: no message. The child exits on ``stop`` (after acknowledging what it was told to)
and when the parent's end closes (parent died: nothing more is acknowledged; its pending entries are
re-read by the next learner of this name).

Every message to a child that waits for it wakes it, and on these VMs the waker pays for that wake-up
(~47 µs of the training thread's CPU per message, measured): the parent returns slots ``RETURN_EVERY``
at a time, and whatever it holds before it would wait for a batch. On 2 cores, the in-thread
alternative cost 1.2–1.7 ms of GIL time per 1.3 ms CartPole update
(docs/adr/0011-learner-decode-process.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import select
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import torch
import torch.multiprocessing  # registers the reductions that pass shared tensors to the child

from impala.buffer.consumer import Entry, RolloutConsumer
from impala.core import heap, logs
from impala.core.batch import TENSOR_FIELDS, Batch, collate
from impala.core.models import ModelSpec
from impala.core.redis_keys import RunKeys
from impala.learner.batch_decoding import BatchDecoder
from impala.learner.decoding import blank_record
from impala.learner.metrics import LearnerMetrics
from impala.learner.prefetch import BatchFiller, Prepared

log = logging.getLogger(__name__)

RETURN_EVERY = 4  # slots handed back to the child per message (before a wait: whatever is held)
# Longest buffer read while the parent holds batches: their acks may be on the way, and on a full buffer
# only they make room for the producers, so a read blocked for ``block_ms`` meanwhile stalls all three
# (with 16 envs in one stream: 10 updates/s instead of ~50; docs/adr/0027-local-process-layout.md).
HELD_BLOCK_MS = 5
_STOP_S = 5.0  # how long a stopping child may take (a read waits at most block_ms) before it is killed


@dataclass(frozen=True)
class DecodeConfig:
    """Everything the child needs to build its consumer and decoder (picklable)."""

    redis_url: str
    run: str
    consumer: str
    claim_idle_s: float
    spec: ModelSpec
    unroll_length: int
    batch_size: int
    max_policy_lag: int
    block_ms: int = 200
    # Batches read ahead at most (0: as many as there are slots). Learner ranks set it to the prefetch
    # depth: a rank whose peers have no batch yet must not hoard what the bounded buffer holds.
    max_ahead: int = 0
    log_level: str = "INFO"
    log_format: str = "json"


class DecodeProcessError(RuntimeError):
    """The decode process failed or died; the learner cannot get batches any more."""


class DecodeProcess:
    """The training loop's batch source (``impala.learner.prefetch.BatchSource``).

    Args:
        config: the child's consumer and decoder settings.
        device: where ``learn_step`` runs; batches are copied there from shared memory when not CPU.
        metrics: drop counters, incremented here from the child's reports.
        current_version: the learner's policy version now (shared with the child, which screens stale rollouts).
        depth: ready batches waiting at most; ``depth + RETURN_EVERY`` slots are shared (the ones
            being filled or held by the parent before it returns them, and the one it learns from).
    """

    def __init__(
        self,
        config: DecodeConfig,
        device: str,
        metrics: LearnerMetrics,
        *,
        current_version: Callable[[], int],
        depth: int = 2,
    ) -> None:
        self.config, self.metrics, self._version = config, metrics, current_version
        self.device = torch.device(device)
        blank = [blank_record(config.spec, config.unroll_length)] * config.batch_size
        self.slots = [_shared(collate(blank, "cpu")) for _ in range(depth + RETURN_EVERY)]
        self._on_device: Batch | None = None
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._shared_version = context.RawValue(ctypes.c_int64, current_version())
        self._process = context.Process(
            target=serve,
            args=(child_conn, config, self.slots, self._shared_version),
            name="learner-decode",
            daemon=True,
        )
        self._child_conn = child_conn
        self._acks: list[str] = []
        self._held: list[int] = []  # slots learned from, not yet handed back
        # With a read-ahead bound every learned slot goes back at once, or the child would wait for it.
        self._return_every = 1 if config.max_ahead else RETURN_EVERY
        self._readable = select.poll()  # Connection.poll builds a selector per call: ~15 µs
        self._readable.register(self._conn.fileno(), select.POLLIN)

    def start(self) -> None:
        """Start the child and hand it every slot."""
        self._process.start()
        self._child_conn.close()  # the child holds it now: its exit closes the pipe
        log.info("decode process started", extra={"pid": self._process.pid, "slots": len(self.slots)})
        self._send(("free", list(range(len(self.slots))), []))

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._process.pid

    def get(self, timeout_s: float) -> Prepared[Batch] | None:
        """The next ready batch, or None after ``timeout_s``; raises ``DecodeProcessError`` when the child failed."""
        self._shared_version.value = self._version()
        if self._held and not self._ready(0.0):
            self._return_held()  # about to wait: the child may be waiting for these slots
        while self._ready(timeout_s):
            try:
                message = self._conn.recv()
            except EOFError:
                raise DecodeProcessError(f"decode process died (exit code {self._exitcode()})") from None
            kind = message[0]
            if kind == "dropped":
                self.metrics.rollouts_dropped.labels(reason=message[1]).inc(message[2])
            elif kind == "error":
                raise DecodeProcessError(f"decode process failed:\n{message[1]}")
            else:
                return self._prepared(*message[1:])
            timeout_s = 0.0
        return None

    def _ready(self, timeout_s: float) -> bool:
        return bool(self._readable.poll(timeout_s * 1000))

    def ack(self, ids: Sequence[str]) -> int:
        """Queue the acknowledgement of a learned batch: it goes to the child with the slots it returns
        (or with ``stop``), which sends it to Redis in the round trip of its next read."""
        self._acks += ids
        return len(ids)

    def recycle(self, prepared: Prepared[Batch]) -> None:
        """Give a slot back once its learn step is over (with the queued acks, ``RETURN_EVERY`` slots
        at a time), and show the child the learner's policy version now."""
        self._shared_version.value = self._version()
        self._held.append(prepared.slot)
        if len(self._held) >= self._return_every:
            self._return_held()

    def _return_held(self) -> None:
        slots, self._held = self._held, []
        acks, self._acks = self._acks, []
        self._send(("free", slots, acks))

    def stop(self, timeout_s: float = _STOP_S) -> None:
        """Let the child acknowledge what it was told to and exit; kill it if it does not in time."""
        if self._process.pid is None:
            return
        acks, self._acks = self._acks, []
        with contextlib.suppress(DecodeProcessError):  # already gone
            self._send(("stop", acks))
        self._process.join(timeout_s)
        if self._process.is_alive():
            log.warning("decode process did not stop; killing it", extra={"pid": self._process.pid})
            self._process.kill()
            self._process.join()
        self._conn.close()

    def _prepared(
        self,
        slot: int,
        ids: list[str],
        env_steps: int,
        versions: list[int],
        episode_returns: list[float],
        episode_lengths: list[int],
    ) -> Prepared[Batch]:
        batch = self.slots[slot]
        batch.episode_returns, batch.episode_lengths = episode_returns, episode_lengths
        if self.device.type != "cpu":
            self._on_device = _copy(batch, self.device, self._on_device)
            batch = self._on_device
        return Prepared(batch, ids, env_steps, versions, slot=slot)

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError) as err:
            raise DecodeProcessError(f"decode process is gone (exit code {self._exitcode()})") from err

    def _exitcode(self) -> int | None:
        self._process.join(0.5)
        return self._process.exitcode


def _shared(batch: Batch) -> Batch:
    for tensor in (*(getattr(batch, name) for name in TENSOR_FIELDS), *batch.initial_core_state):
        tensor.share_memory_()
    return batch


def _copy(host: Batch, device: torch.device, out: Batch | None) -> Batch:
    """``host``'s tensors on ``device``, reusing ``out``'s memory."""
    if out is None:
        out = Batch(
            **{name: getattr(host, name).to(device) for name in TENSOR_FIELDS},
            initial_core_state=tuple(s.to(device) for s in host.initial_core_state),
        )
    else:
        for name in TENSOR_FIELDS:
            getattr(out, name).copy_(getattr(host, name))
        for dst, src in zip(out.initial_core_state, host.initial_core_state, strict=True):
            dst.copy_(src)
    out.episode_returns, out.episode_lengths = host.episode_returns, host.episode_lengths
    return out


def serve(conn: Connection, config: DecodeConfig, slots: list[Batch], version: ctypes.c_int64) -> None:
    """The child's main: fill free slots until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (and acks first)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A spawned child starts with an empty log mask: the Redis password is its one secret.
    logs.configure(config.log_level, config.log_format, [urlsplit(config.redis_url).password or ""])
    heap.retain_freed_memory()
    torch.set_num_threads(1)
    consumer = RolloutConsumer(
        config.redis_url, RunKeys(config.run), consumer=config.consumer, claim_idle_s=config.claim_idle_s
    )
    worker = _Worker(conn, consumer, config, slots, version)
    try:
        worker.run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: acknowledge nothing more
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        consumer.close()


class _Worker:
    def __init__(
        self,
        conn: Connection,
        consumer: RolloutConsumer,
        config: DecodeConfig,
        slots: list[Batch],
        version: ctypes.c_int64,
    ) -> None:
        self.conn, self.consumer, self.slots, self.version = conn, consumer, slots, version
        self.free: deque[int] = deque()
        self.max_ahead = config.max_ahead or len(slots)
        self.to_ack: list[str] = []
        self.stopping = False

        def on_drop(reason: str, count: int) -> None:
            conn.send(("dropped", reason, count))

        self.filler = BatchFiller(
            self,
            decoder=BatchDecoder(config.spec, config.unroll_length),
            batch_size=config.batch_size,
            max_policy_lag=config.max_policy_lag,
            on_drop=on_drop,
            block_ms=config.block_ms,
        )

    def run(self) -> None:
        while True:
            self._receive(block=not self.free or len(self.slots) - len(self.free) >= self.max_ahead)
            if self.stopping:
                self._flush_acks()
                return
            slot = self.free[0]
            prepared = self.filler.fill(self.slots[slot], self._current_version, self._poll_stop)
            if prepared is None:
                continue  # stop arrived mid-fill: loop to flush acks and exit
            self.free.popleft()
            batch = prepared.batch
            self.conn.send(
                (
                    "ready",
                    slot,
                    prepared.ids,
                    prepared.env_steps,
                    prepared.versions,
                    batch.episode_returns,
                    batch.episode_lengths,
                )
            )

    def _current_version(self) -> int:
        """The learner's policy version now."""
        return int(self.version.value)

    def _poll_stop(self) -> bool:
        self._receive(block=False)
        return self.stopping

    def read(self, count: int, block_ms: int = 200) -> list[Entry]:
        """The filler's read: acknowledges what the parent learned from in the same round trip, and
        waits at most ``HELD_BLOCK_MS`` while the parent holds batches whose acks it may send any moment
        (the filler takes them between reads)."""
        ids, self.to_ack = self.to_ack, []
        if len(self.free) < len(self.slots):
            block_ms = min(block_ms, HELD_BLOCK_MS)
        return self.consumer.read(count, block_ms, ack=ids)

    def drop(self, ids: Sequence[str], reason: str) -> int:
        return self.consumer.drop(ids, reason)

    def _receive(self, *, block: bool) -> None:
        """Take every waiting message (waiting for one when ``block``, meanwhile keeping the entries of
        the batches the parent has not learned from yet from being reclaimed)."""
        while block and not self.conn.poll(self.consumer.claim_idle_s / 3):
            self.consumer.keep_held()
        while block or self.conn.poll():
            block = False
            message = self.conn.recv()
            if message[0] == "free":
                self.free.extend(message[1])
                self.to_ack += message[2]
            else:
                self.to_ack += message[1]
                self.stopping = True

    def _flush_acks(self) -> None:
        if self.to_ack:
            ids, self.to_ack = self.to_ack, []
            self.consumer.ack(ids)
