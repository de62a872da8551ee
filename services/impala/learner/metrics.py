"""Prometheus metrics of the learner, declared once on an injected registry (names from the common
brief: the chart's dashboards and alerts query exactly these)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from impala.core.metrics import LATENCY_BUCKETS, LatestValue, zero_labels

# Policy lag in versions: 0 is on-policy; IMPALA runs usually sit between 1 and a few tens.
LAG_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
LOSS_TERMS = ("total", "pg", "baseline", "entropy")
EVAL_MODES = ("greedy", "sampled")
EVAL_OUTCOMES = ("done", "skipped", "failed")


@dataclass(frozen=True)
class LearnerMetrics:
    steps: Counter
    env_steps: Counter
    loss: Gauge
    episode_return_mean: Gauge
    episodes: Counter
    policy_lag: Histogram
    batch_wait: Histogram
    learn_time: Histogram
    rollouts_consumed: Counter
    rollouts_dropped: Counter
    policy_version: Gauge
    last_checkpoint: LatestValue
    checkpoint_interval: Gauge
    paused: Gauge
    buffer_too_small: Gauge
    heartbeat: Gauge
    grad_norm: Gauge
    learning_rate: Gauge
    eval_return: Gauge
    evaluations: Counter
    best_return: LatestValue

    @classmethod
    def create(cls, registry: CollectorRegistry) -> LearnerMetrics:
        dropped = Counter(
            "impala_learner_rollouts_dropped_total",
            "Rollouts dropped without learning: stale (policy lag over the limit) or corrupt.",
            ["reason"],
            registry=registry,
        )
        loss = Gauge("impala_learner_loss", "Loss of the last update, by term.", ["term"], registry=registry)
        zero_labels(dropped, ("stale", "corrupt"))  # zeros: the first drop shows in rate()
        evaluations = Counter(
            "impala_learner_evaluations_total",
            "Periodic evaluations: done, skipped (due while the previous one ran) or failed.",
            ["outcome"],
            registry=registry,
        )
        zero_labels(evaluations, EVAL_OUTCOMES)
        for term in LOSS_TERMS:
            loss.labels(term=term)
        heartbeat = Gauge(
            "impala_learner_heartbeat_timestamp_seconds",
            "Unix time of the last status heartbeat (the process start before the first).",
            registry=registry,
        )
        heartbeat.set(time.time())  # a loop stuck before its first heartbeat still ages
        return cls(
            steps=Counter("impala_learner_steps_total", "Optimizer steps taken.", registry=registry),
            env_steps=Counter(
                "impala_learner_env_steps_total", "Env steps learned from (valid, unmasked steps).", registry=registry
            ),
            loss=loss,
            episode_return_mean=Gauge(
                "impala_learner_episode_return_mean", "Mean return of the last 100 episodes.", registry=registry
            ),
            episodes=Counter(
                "impala_learner_episodes_total",
                "Episodes completed in the rollouts read (stale ones too).",
                registry=registry,
            ),
            policy_lag=Histogram(
                "impala_learner_policy_lag_versions",
                "Learner policy version minus the version that acted, per rollout.",
                buckets=LAG_BUCKETS,
                registry=registry,
            ),
            batch_wait=Histogram(
                "impala_learner_batch_wait_seconds",
                "Time the learner waited for a collated batch.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            learn_time=Histogram(
                "impala_learner_learn_seconds",
                "Wall time of one learn step.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            rollouts_consumed=Counter(
                "impala_learner_rollouts_consumed_total", "Rollouts learned from and acknowledged.", registry=registry
            ),
            rollouts_dropped=dropped,
            policy_version=Gauge(
                "impala_learner_policy_version", "Version of the learner's current parameters.", registry=registry
            ),
            last_checkpoint=LatestValue(
                "impala_learner_last_checkpoint_timestamp_seconds",
                "Unix time of the last checkpoint this learner wrote (absent before its first).",
                registry,
            ),
            checkpoint_interval=Gauge(
                "impala_learner_checkpoint_interval_seconds",
                "Configured seconds between periodic checkpoints (checkpoint_interval_s).",
                registry=registry,
            ),
            paused=Gauge("impala_learner_paused", "1 while the run is paused (no optimizer steps).", registry=registry),
            buffer_too_small=Gauge(
                "impala_learner_buffer_too_small",
                "1 while the learner is starved and no live ActorPool's buffer_capacity holds one batch (rank 0).",
                registry=registry,
            ),
            heartbeat=heartbeat,
            grad_norm=Gauge(
                "impala_learner_grad_norm", "Gradient norm of the last update, before clipping.", registry=registry
            ),
            learning_rate=Gauge(
                "impala_learner_learning_rate", "Learning rate of the last update (after decay).", registry=registry
            ),
            # No child before the first evaluation: "not evaluated yet" is absent, not a return of 0.
            eval_return=Gauge(
                "impala_learner_eval_return",
                "Mean episode return of the last periodic evaluation, by action mode (greedy or sampled).",
                ["mode"],
                registry=registry,
            ),
            evaluations=evaluations,
            best_return=LatestValue(
                "impala_learner_best_return",
                "Score of best.pt: the best evaluation's sampled mean return, or the best training mean return "
                "at a checkpoint when evaluation is off (absent before the first).",
                registry,
            ),
        )
