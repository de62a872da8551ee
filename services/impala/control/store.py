"""The run's control-plane state in Redis, read and written per the shared contract (key names in
``impala.core.redis_keys``). The API keeps no state of its own, so it can restart at any time."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from impala.control.models import Checkpoint, RolloutCounters, RunStatus
from impala.core.redis_keys import RunKeys

log = logging.getLogger(__name__)

# Learners poll the commands stream; an approximate cap keeps it from growing for ever without
# ever trimming a command that is still waiting (a backlog of 10k commands means the learner is gone).
COMMANDS_MAXLEN = 10_000

# Compare-and-set of the pause flag, so two concurrent pause requests get one 200 and one 409.
_SET_PAUSED = """
local current = redis.call('HGET', KEYS[1], 'paused')
if (current == '1') == (ARGV[1] == '1') then return 0 end
redis.call('HSET', KEYS[1], 'paused', ARGV[1], 'updated_unix', ARGV[2])
return 1
"""


def _text(value: Any) -> str:
    """Redis replies as str whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _float(fields: dict[str, str], key: str) -> float | None:
    try:
        return float(fields[key])
    except (KeyError, ValueError):
        return None


def _int(fields: dict[str, str], key: str) -> int | None:
    value = _float(fields, key)
    return int(value) if value is not None and math.isfinite(value) else None


def parse_checkpoint(checkpoint_id: str, raw: Any) -> Checkpoint:
    """A record of the checkpoints hash; an unreadable one reads as failed rather than breaking the list."""
    try:
        record = Checkpoint.model_validate({**json.loads(_text(raw)), "id": checkpoint_id})
    except (ValueError, TypeError, ValidationError):
        log.warning("unreadable checkpoint record", extra={"checkpoint_id": checkpoint_id})
        return Checkpoint(id=checkpoint_id, status="failed", error="unreadable record in Redis")
    return record


class RunStore:
    """Reads and writes one run's control keys."""

    def __init__(self, redis: aioredis.Redis, keys: RunKeys, *, learner_timeout_s: float, pool_timeout_s: float):
        self.redis, self.keys = redis, keys
        self.learner_timeout_s, self.pool_timeout_s = learner_timeout_s, pool_timeout_s
        self._set_paused = redis.register_script(_SET_PAUSED)

    async def ping(self) -> None:
        """Raises a redis ConnectionError/TimeoutError when Redis does not answer."""
        await self.redis.ping()

    async def learner_heartbeat_age(self) -> float | None:
        """Seconds since the learner's last heartbeat, None when it never wrote one."""
        heartbeat = await self.redis.hget(self.keys.learner_status, "heartbeat")
        return _age(None if heartbeat is None else _text(heartbeat))

    def learner_alive(self, age: float | None) -> bool:
        return age is not None and age <= self.learner_timeout_s

    async def paused(self) -> bool:
        return _text(await self.redis.hget(self.keys.state, "paused") or "0") == "1"

    async def set_paused(self, paused: bool) -> bool:
        """Set the desired pause state; False when it already was ``paused`` (nothing changed)."""
        changed = await self._set_paused(keys=[self.keys.state], args=["1" if paused else "0", f"{time.time():.3f}"])
        return bool(int(changed))

    async def status(self) -> RunStatus:
        """Everything GET /v1/status shows, from one pipelined round trip (plus one for live pools)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.state, "paused")
            pipe.hgetall(self.keys.learner_status)
            pipe.xlen(self.keys.rollouts)
            pipe.zrangebyscore(self.keys.pools, now - self.pool_timeout_s, "+inf")
            pipe.hgetall(self.keys.counters)
            paused, learner_raw, depth, pool_ids, counters_raw = await pipe.execute()
        learner, counters = _hash(learner_raw), _hash(counters_raw)
        age = _age(learner.get("heartbeat"), now)
        effective = learner.get("paused")
        return RunStatus(
            run=self.keys.run,
            paused=_text(paused or "0") == "1",
            learner_paused=None if effective is None else effective == "1",
            learner_alive=self.learner_alive(age),
            learner_heartbeat_age_s=age,
            learner_step=_int(learner, "learner_step"),
            env_steps=_int(learner, "env_steps"),
            env_steps_per_second=_float(learner, "env_steps_per_second"),
            policy_version=_int(learner, "policy_version"),
            policy_lag_mean=_float(learner, "policy_lag_mean"),
            episode_return_mean=_float(learner, "episode_return_mean"),
            episodes=_int(learner, "episodes"),
            last_checkpoint=learner.get("last_checkpoint") or None,
            last_checkpoint_step=_int(learner, "last_checkpoint_step"),
            buffer_depth=int(depth),
            clients=await self._clients([_text(p) for p in pool_ids]),
            rollouts=RolloutCounters(
                **{
                    name: _int(counters, f"rollouts_{name}") or 0
                    for name in ("produced", "shed", "consumed", "dropped")
                }
            ),
        )

    async def _clients(self, pool_ids: list[str]) -> dict[str, int]:
        """Connected clients of each live pool; a pool whose status hash expired is gone."""
        if not pool_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool_id in pool_ids:
                pipe.hget(self.keys.pool_status(pool_id), "clients")
            counts = await pipe.execute()
        return {pool_id: int(float(_text(n))) for pool_id, n in zip(pool_ids, counts, strict=True) if n is not None}

    async def request_checkpoint(self) -> str:
        """Create a pending checkpoint record, then send the command; returns its id."""
        checkpoint_id = uuid.uuid4().hex
        now = time.time()
        record = Checkpoint(id=checkpoint_id, status="pending", created_unix=now)
        # MULTI keeps the contract's order (record before command) and never leaves one without the other.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.checkpoints, checkpoint_id, record.model_dump_json(exclude_none=True))
            pipe.xadd(
                self.keys.commands,
                {"cmd": "checkpoint", "id": checkpoint_id, "ts": f"{now:.3f}"},
                maxlen=COMMANDS_MAXLEN,
                approximate=True,
            )
            await pipe.execute()
        return checkpoint_id

    async def checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        raw = await self.redis.hget(self.keys.checkpoints, checkpoint_id)
        return None if raw is None else parse_checkpoint(checkpoint_id, raw)

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint record, newest first."""
        records = [parse_checkpoint(_text(k), v) for k, v in (await self.redis.hgetall(self.keys.checkpoints)).items()]
        return sorted(records, key=lambda r: (r.created_unix or 0.0, r.id), reverse=True)


def _age(heartbeat: str | None, now: float | None = None) -> float | None:
    if heartbeat is None:
        return None
    try:
        return max(0.0, (time.time() if now is None else now) - float(heartbeat))
    except ValueError:
        return None
