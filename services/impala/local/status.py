"""One reading of a run's progress, taken from the Redis status keys the services write.

Sources (the control-plane contract): the learner's status hash (counters, mean return, lag), the
pool status hashes of replicas with a fresh heartbeat (connected clients) and the length of the
rollout stream (buffer depth). Reading Redis directly keeps the display working while the control
API restarts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import redis

from impala.core.pools import live_pools
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import LearnerStatus


@dataclass(frozen=True)
class Snapshot:
    """Progress at one moment; the columns of ``metrics.csv`` in order."""

    time_s: float
    env_steps: int = 0
    learner_step: int = 0
    episode_return_mean: float = math.nan
    episodes: int = 0
    env_steps_per_second: float = 0.0
    policy_lag_mean: float = math.nan
    buffer_depth: int = 0
    clients: int = 0
    # Of the learner's last update (empty cells before the first).
    policy_loss: float = math.nan
    value_loss: float = math.nan
    entropy_loss: float = math.nan
    grad_norm: float = math.nan
    learning_rate: float = math.nan
    # Of the learner's last periodic evaluation (empty cells before the first, and when it is off).
    eval_return_greedy: float = math.nan
    eval_return_sampled: float = math.nan

    @staticmethod
    def columns() -> list[str]:
        return [f.name for f in fields(Snapshot)]

    def row(self) -> dict[str, float | int]:
        return asdict(self)


def read_snapshot(client: redis.Redis, keys: RunKeys, time_s: float) -> Snapshot:
    """Read the status keys once (raises ``redis.RedisError`` when Redis is unreachable)."""
    learner = LearnerStatus.from_hash(client.hgetall(keys.learner_status))
    clients = sum(pool.clients or 0 for pool in live_pools(client, keys).values())
    episodes = learner.episodes or 0

    def number(value: float | None, default: float = math.nan) -> float:
        return default if value is None else value

    return Snapshot(
        time_s=round(time_s, 3),
        env_steps=learner.env_steps or 0,
        learner_step=learner.learner_step or 0,
        # A mean over no episodes is no number (not 0): the csv cell stays empty and nothing is plotted.
        episode_return_mean=number(learner.episode_return_mean) if episodes else math.nan,
        episodes=episodes,
        env_steps_per_second=number(learner.env_steps_per_second, 0.0),
        policy_lag_mean=number(learner.policy_lag_mean),
        buffer_depth=int(client.xlen(keys.rollouts)),
        clients=clients,
        # The loss terms of impala_learner_loss, under metrics.csv's column names.
        policy_loss=number(learner.pg_loss),
        value_loss=number(learner.baseline_loss),
        entropy_loss=number(learner.entropy_loss),
        grad_norm=number(learner.grad_norm),
        learning_rate=number(learner.learning_rate),
        eval_return_greedy=number(learner.eval_return_greedy),
        eval_return_sampled=number(learner.eval_return_sampled),
    )


def target_reached(snapshot: Snapshot, target: float | None, window: int = 100) -> bool:
    """The mean over the last ``window`` episodes is at least ``target`` (and that many episodes exist)."""
    if target is None or snapshot.episodes < window or math.isnan(snapshot.episode_return_mean):
        return False
    return snapshot.episode_return_mean >= target
