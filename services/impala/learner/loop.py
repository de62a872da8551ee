"""The training loop: wait for a batch, learn, acknowledge, account, publish; serve checkpoint
requests and honour pause between steps. Everything it drives is built elsewhere (``impala.learner.main``)
and handed in, so tests assemble the same loop from real parts.

Order inside one step is what makes the buffer at-least-once: the entries of a batch are acknowledged
(and deleted) only after the optimizer step that used them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from impala.core.batch import Batch
from impala.core.learn import LearnConfig, LearnerState, learn_step
from impala.core.redis_records import CheckpointRecord, LearnerStatus
from impala.learner.buffer_check import BufferCheck
from impala.learner.checkpointing import Checkpointer, CheckpointInfo
from impala.learner.control import CheckpointRequest, ControlPlane
from impala.learner.distributed import Held, RankLostError, Ranks, Solo, Turn
from impala.learner.eval_schedule import PeriodicEvaluation
from impala.learner.metrics import LearnerMetrics
from impala.learner.prefetch import BatchSource, Prepared
from impala.learner.progress import Progress, RateMeter
from impala.learner.publishing import BackgroundPublisher, cpu_snapshot

log = logging.getLogger(__name__)

_WAIT_S = 0.05  # longest pause between looks at the stop flag, pause flag and command queue
_LOSS_TERMS = {"total": "total_loss", "pg": "pg_loss", "baseline": "baseline_loss", "entropy": "entropy_loss"}
# Statistics of the last update that the status hash carries (metrics.csv of ``impala local`` reads them).
_STATUS_STATS = ("pg_loss", "baseline_loss", "entropy_loss", "grad_norm", "learning_rate")


class Acknowledger(Protocol):
    """What the loop needs from the buffer (``RolloutConsumer``)."""

    def ack(self, ids: Sequence[str]) -> int: ...


@dataclass
class TrainingLoop:
    """One learner's loop over its collaborators (see ``impala.learner.main.build_learner``)."""

    state: LearnerState
    config: LearnConfig
    prefetcher: BatchSource[Batch]
    consumer: Acknowledger
    checkpointer: Checkpointer
    control: ControlPlane | None
    metrics: LearnerMetrics
    progress: Progress
    publisher: BackgroundPublisher | None = None
    publish_interval: int = 1
    primary: bool = True  # rank 0 (or alone): writes checkpoints
    paused: bool = False  # effective: True once the loop has stopped stepping
    ranks: Ranks = field(default_factory=Solo)
    evaluation: PeriodicEvaluation | None = None  # rank 0 of a run with a Gymnasium env, when enabled
    buffer_check: BufferCheck | None = None  # rank 0: says so when the pools' buffer cannot hold a batch
    _rate: RateMeter = field(default_factory=RateMeter)
    _status: LearnerStatus = field(default_factory=LearnerStatus)
    _held: Prepared[Batch] | None = None  # a batch that arrived just as the run was paused
    _last_stats: dict[str, float] = field(default_factory=dict)  # of the last update, for the status hash

    def run(self, stop: threading.Event) -> None:
        """Train until ``stop`` is set (on any rank), then write a final checkpoint (rank 0)."""
        self._publish(initial=True)
        self.refresh_status()
        wait_started = time.monotonic()
        try:
            while True:
                turn = self._turn(stop)
                if turn.stop:
                    break
                self.progress.policy_version = turn.version
                self._show_pause(turn.paused)
                if turn.paused or not turn.ready or self._held is None:
                    self._note_wait(starved=not turn.paused)
                    continue
                self.metrics.batch_wait.observe(time.monotonic() - wait_started)
                prepared, self._held = self._held, None
                self._learn(prepared, turn)
                self._note_wait(starved=False)
                wait_started = time.monotonic()
        except RankLostError:
            # The state is that of the last step every rank finished: keep it for the restarted world.
            self._final_checkpoint()
            raise
        self._serve_requests()
        self._final_checkpoint()

    def _final_checkpoint(self) -> None:
        if self.primary:  # the other ranks hold the same state
            self.checkpoint()

    def _turn(self, stop: threading.Event) -> Turn:
        """Serve requests, look for a batch unless paused, and agree with the other ranks on the turn."""
        self._serve_requests()
        if self.evaluation is not None and self.evaluation.collect() is not None:
            self.refresh_status()
        if self.checkpointer.due():
            self._periodic_checkpoint()
        paused = self.control is not None and self.control.paused
        if paused:
            stop.wait(_WAIT_S)
        elif self._held is None and not stop.is_set():
            self._held = self.prefetcher.get(timeout_s=_WAIT_S)
            # Paused while waiting: the batch is held and learned from after resume.
            paused = self.control is not None and self.control.paused
        held = Held(self._held.env_steps, self._held.batch.episode_returns) if self._held is not None else None
        return self.ranks.agree(stop=stop.is_set(), paused=paused, version=self.progress.policy_version, held=held)

    def _note_wait(self, *, starved: bool) -> None:
        """Tell the buffer check whether the loop is waiting for a batch (a step or a pause ends a wait)."""
        if self.buffer_check is None:
            return
        if starved:
            self.buffer_check.starved()
        else:
            self.buffer_check.fed()

    def _show_pause(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self.metrics.paused.set(int(paused))
            self.refresh_status()
            log.info("learning paused" if paused else "learning resumed", extra={"step": self.state.learner_steps})

    def _learn(self, prepared: Prepared[Batch], turn: Turn) -> None:
        version = self.progress.policy_version
        for acted in prepared.versions:
            lag = max(0, version - acted)  # a restarted learner may be behind the weights that acted
            self.metrics.policy_lag.observe(lag)
            self.progress.lags.append(lag)
        started = time.monotonic()
        stats = learn_step(self.state, prepared.batch, self.config, reduce_gradients=self.ranks.reducer(turn))
        self.metrics.learn_time.observe(time.monotonic() - started)
        self.consumer.ack(prepared.ids)
        if self.state.learner_steps % self.publish_interval == 0:
            self._publish()
        # After the version bump: the batch source screens the next rollouts' lag against it before
        # the step shows in the metrics.
        self.prefetcher.recycle(prepared)
        self._account(prepared, stats, turn)
        if self.evaluation is not None:
            self.evaluation.after_update(self.state, self.progress.policy_version)
        self.refresh_status()

    def _account(self, prepared: Prepared[Batch], stats: dict[str, float], turn: Turn) -> None:
        # Metrics count this rank's share (Prometheus sums the pods); Progress and the status hash the
        # global batch's.
        m = self.metrics
        m.steps.inc()
        m.env_steps.inc(prepared.env_steps)
        m.rollouts_consumed.inc(len(prepared.ids))
        self.progress.record_episodes(turn.returns, count=turn.episodes)
        m.episodes.inc(len(prepared.batch.episode_returns))
        m.episode_return_mean.set(self.progress.return_mean)
        for term, key in _LOSS_TERMS.items():
            m.loss.labels(term=term).set(stats[key])
        m.grad_norm.set(stats["grad_norm"])
        m.learning_rate.set(stats["learning_rate"])
        self._last_stats = {key: stats[key] for key in _STATUS_STATS}

    def _publish(self, *, initial: bool = False) -> None:
        """Hand the current parameters to the publisher under a new version (the current one on resume)."""
        floor = self.publisher.service_version if self.publisher is not None else 0
        if not (initial and self.progress.policy_version > 0):
            # Above whatever the service already serves: a learner restored from an older checkpoint
            # than its crashed predecessor's last publish keeps versions increasing.
            self.progress.policy_version = max(self.progress.policy_version + 1, floor + 1)
        self.metrics.policy_version.set(self.progress.policy_version)
        if self.publisher is not None:
            self.publisher.offer(self.progress.policy_version, cpu_snapshot(self.state.model))

    def _serve_requests(self) -> None:
        if self.control is None:
            return
        while not self.control.requests.empty():
            request = self.control.requests.get_nowait()
            self.control.complete(request, self._answer(request))

    def _answer(self, request: CheckpointRequest) -> CheckpointRecord:
        try:
            info = self.checkpoint()
        except Exception as err:  # disk full, permissions: report it to whoever asked
            log.exception("requested checkpoint failed", extra={"id": request.id})
            return CheckpointRecord(id=request.id, status="failed", error=str(err))
        return CheckpointRecord(
            id=request.id,
            status="done",
            path=str(info.path),
            step=info.step,
            bytes=info.bytes,
            created_unix=info.created_unix,
        )

    def _periodic_checkpoint(self) -> None:
        if not self.primary:
            return
        last = self.checkpointer.last
        if last is not None and last.step == self.state.learner_steps:
            self.checkpointer.postpone()  # nothing learned since (paused or starved): no new file
            return
        try:
            self.checkpoint()
        except OSError as err:
            log.error("periodic checkpoint failed; will retry", extra={"error": str(err)})
            self.checkpointer.postpone()

    def checkpoint(self) -> CheckpointInfo:
        """Write a checkpoint of the current state now."""
        info = self.checkpointer.save(self.state, self.progress)
        self.metrics.last_checkpoint.set(info.created_unix)
        if self.checkpointer.keep_best is not None and self.checkpointer.keep_best.score is not None:
            self.metrics.best_return.set(self.checkpointer.keep_best.score)
        self.refresh_status()
        return info

    def refresh_status(self) -> None:
        """Rebuild the heartbeat fields on this thread (the control thread only reads the dict)."""
        last = self.checkpointer.last
        self._status = LearnerStatus(
            learner_step=self.state.learner_steps,
            env_steps=self.state.env_steps,
            policy_version=self.progress.policy_version,
            policy_lag_mean=self.progress.lag_mean,
            episode_return_mean=self.progress.return_mean,
            episodes=self.progress.episodes,
            paused=self.paused,
            last_checkpoint=str(last.path) if last else "",
            last_checkpoint_step=last.step if last else 0,
            last_checkpoint_unix=last.created_unix if last else 0.0,
            **self._last_stats,
            **(self.evaluation.status() if self.evaluation is not None else {}),
        )

    def status(self) -> LearnerStatus:
        """Heartbeat fields (called by the control thread)."""
        rate = self._rate.update(self._status.env_steps or 0)
        self.metrics.heartbeat.set(time.time())
        return self._status.model_copy(update={"env_steps_per_second": rate})
