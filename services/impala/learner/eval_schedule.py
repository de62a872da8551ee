"""When the loop evaluates, and what it does with the reports: metrics, one structured log line per
evaluation, and the fields of the status hash (``impala local`` records them in ``metrics.csv``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from impala.core.learn import LearnerState
from impala.core.models import ModelSpec
from impala.learner.evaluation import EvalConfig, EvalError, EvalReport, EvalRequest, Evaluator
from impala.learner.metrics import LearnerMetrics
from impala.learner.publishing import cpu_snapshot
from impala.learner.settings import LearnerSettings

log = logging.getLogger(__name__)


@dataclass
class PeriodicEvaluation:
    """Submits the weights every ``every`` updates and collects what the evaluator reports."""

    evaluator: Evaluator
    every: int
    metrics: LearnerMetrics
    last: EvalReport | None = None

    def after_update(self, state: LearnerState, policy_version: int) -> None:
        """Submit the current weights when an evaluation is due (skip it while one still runs)."""
        if state.learner_steps % self.every:
            return
        request = EvalRequest(cpu_snapshot(state.model), policy_version, state.learner_steps, state.env_steps)
        if not self.evaluator.submit(request):
            self.metrics.evaluations.labels(outcome="skipped").inc()
            log.info("evaluation skipped: the previous one is still running", extra={"step": state.learner_steps})

    def collect(self) -> EvalReport | None:
        """The report of a finished evaluation (metrics and a log line written), or None."""
        try:
            report = self.evaluator.poll()
        except EvalError as err:
            self.metrics.evaluations.labels(outcome="failed").inc()
            log.error("evaluation failed; the next one starts a fresh process", extra={"error": str(err)})
            return None
        if report is None:
            return None
        self.last = report
        m = self.metrics
        m.evaluations.labels(outcome="done").inc()
        m.eval_return.labels(mode="greedy").set(report.greedy_return)
        m.eval_return.labels(mode="sampled").set(report.sampled_return)
        m.best_return.set(report.best_return)
        log.info(
            "evaluation",
            extra={
                "learner_step": report.learner_steps,
                "env_steps": report.env_steps,
                "policy_version": report.policy_version,
                "return_greedy": round(report.greedy_return, 3),
                "return_sampled": round(report.sampled_return, 3),
                "length_greedy": report.greedy_length,
                "length_sampled": report.sampled_length,
                "episodes": self.evaluator.config.episodes,
                "best": report.best,
                "seconds": round(report.seconds, 3),
            },
        )
        return report

    def status(self) -> dict[str, float | int]:
        """Status-hash fields of the last evaluation (none before the first)."""
        if self.last is None:
            return {}
        return {
            "eval_return_greedy": self.last.greedy_return,
            "eval_return_sampled": self.last.sampled_return,
            "eval_env_steps": self.last.env_steps,
            "best_return": self.last.best_return,
        }

    def stop(self) -> None:
        self.evaluator.stop()


# Evaluation episodes are seeded apart from the training envs (whose seeds start at the run's seed).
EVAL_SEED_OFFSET = 1_000_000


def build_evaluation(
    settings: LearnerSettings, spec: ModelSpec, metrics: LearnerMetrics, *, primary: bool
) -> PeriodicEvaluation | None:
    """Rank 0's periodic evaluation, or None: turned off (``eval_every_updates`` 0), another rank, or a
    spec-only run (no Gymnasium env to play: one log line says so)."""
    if not primary or settings.eval_every_updates == 0:
        return None
    env_id = settings.env_id()
    if env_id is None:
        log.info(
            "periodic evaluation skipped: a spec-only run has no Gymnasium env to evaluate in (pass --env ID)",
            extra={"env_spec": str(settings.env_spec)},
        )
        return None
    config = EvalConfig(
        env_id=env_id,
        episodes=settings.eval_episodes,
        seed=settings.seed + EVAL_SEED_OFFSET,
        spec=spec,
        checkpoint_dir=settings.checkpoint_dir,
        config=settings.public_dict(),
        log_level=settings.log_level,
        log_format=settings.log_format,
    )
    return PeriodicEvaluation(Evaluator(config), settings.eval_every_updates, metrics)
