"""One reading of a run's progress, taken from the Redis status keys the services write.

Sources (the control-plane contract): the learner's status hash (counters, mean return, lag), the
pool status hashes of replicas with a fresh heartbeat (connected clients) and the length of the
rollout stream (buffer depth). Reading Redis directly keeps the display working while the control
API restarts.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

import redis

from impala.core.redis_keys import RunKeys

POOL_FRESH_S = 30.0
# metrics.csv column -> field of the learner's status hash (the loss terms of impala_learner_loss).
_UPDATE_STATS = {
    "policy_loss": "pg_loss",
    "value_loss": "baseline_loss",
    "entropy_loss": "entropy_loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "eval_return_greedy": "eval_return_greedy",
    "eval_return_sampled": "eval_return_sampled",
}


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _num(raw: dict[str, str], key: str, default: float) -> float:
    value = raw.get(key)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        return default


def read_snapshot(client: redis.Redis, keys: RunKeys, time_s: float) -> Snapshot:
    """Read the status keys once (raises ``redis.RedisError`` when Redis is unreachable)."""
    learner = {_text(k): _text(v) for k, v in client.hgetall(keys.learner_status).items()}
    pool_ids = client.zrangebyscore(keys.pools, time.time() - POOL_FRESH_S, "+inf")
    clients = 0
    for pool_id in pool_ids:
        assert isinstance(pool_id, bytes | str)  # no WITHSCORES: plain members
        raw = client.hget(keys.pool_status(_text(pool_id)), "clients")
        clients += int(float(raw)) if raw is not None else 0
    depth = int(client.xlen(keys.rollouts))
    episodes = int(_num(learner, "episodes", 0))
    return Snapshot(
        time_s=round(time_s, 3),
        env_steps=int(_num(learner, "env_steps", 0)),
        learner_step=int(_num(learner, "learner_step", 0)),
        # A mean over no episodes is no number (not 0): the csv cell stays empty and nothing is plotted.
        episode_return_mean=_num(learner, "episode_return_mean", math.nan) if episodes else math.nan,
        episodes=episodes,
        env_steps_per_second=_num(learner, "env_steps_per_second", 0.0),
        policy_lag_mean=_num(learner, "policy_lag_mean", math.nan),
        buffer_depth=depth,
        clients=clients,
        **{column: _num(learner, key, math.nan) for column, key in _UPDATE_STATS.items()},
    )


def target_reached(snapshot: Snapshot, target: float | None, window: int = 100) -> bool:
    """The mean over the last ``window`` episodes is at least ``target`` (and that many episodes exist)."""
    if target is None or snapshot.episodes < window or math.isnan(snapshot.episode_return_mean):
        return False
    return snapshot.episode_return_mean >= target
