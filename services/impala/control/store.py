"""The run's control-plane state in Redis, read and written per the shared contract (key names in
``impala.core.redis_keys``). The API keeps no state of its own, so it can restart at any time."""

from __future__ import annotations

import logging
import time
import uuid

import redis.asyncio as aioredis

from impala.control.models import Checkpoint, RolloutCounters, RunStatus
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import Command, LearnerStatus, PoolStatus, RunCounters, RunState, text

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
        heartbeat = await self.redis.hget(self.keys.learner_status, LearnerStatus.field("heartbeat"))
        return _age(LearnerStatus.parse("heartbeat", heartbeat))

    def learner_alive(self, age: float | None) -> bool:
        return age is not None and age <= self.learner_timeout_s

    async def paused(self) -> bool:
        return RunState.is_paused(await self.redis.hget(self.keys.state, RunState.field("paused")))

    async def set_paused(self, paused: bool) -> bool:
        """Set the desired pause state; False when it already was ``paused`` (nothing changed)."""
        changed = await self._set_paused(keys=[self.keys.state], args=["1" if paused else "0", f"{time.time():.3f}"])
        return bool(int(changed))

    async def status(self) -> RunStatus:
        """Everything GET /v1/status shows, from one pipelined round trip (plus one for live pools)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.state)
            pipe.hgetall(self.keys.learner_status)
            pipe.xlen(self.keys.rollouts)
            pipe.zrangebyscore(self.keys.pools, now - self.pool_timeout_s, "+inf")
            pipe.hgetall(self.keys.counters)
            state_raw, learner_raw, depth, pool_ids, counters_raw = await pipe.execute()
        learner, counters = LearnerStatus.from_hash(learner_raw), RunCounters.from_hash(counters_raw)
        age = _age(learner.heartbeat, now)
        return RunStatus(
            run=self.keys.run,
            paused=RunState.from_hash(state_raw).paused is True,
            learner_paused=learner.paused,
            learner_alive=self.learner_alive(age),
            learner_heartbeat_age_s=age,
            learner_step=learner.learner_step,
            env_steps=learner.env_steps,
            env_steps_per_second=learner.env_steps_per_second,
            policy_version=learner.policy_version,
            policy_lag_mean=learner.policy_lag_mean,
            episode_return_mean=learner.episode_return_mean,
            episodes=learner.episodes,
            last_checkpoint=learner.last_checkpoint,
            last_checkpoint_step=learner.last_checkpoint_step,
            buffer_depth=int(depth),
            clients=await self._clients([text(p) for p in pool_ids]),
            rollouts=RolloutCounters(
                produced=counters.rollouts_produced or 0,
                shed=counters.rollouts_shed or 0,
                consumed=counters.rollouts_consumed or 0,
                dropped=counters.rollouts_dropped or 0,
            ),
        )

    async def _clients(self, pool_ids: list[str]) -> dict[str, int]:
        """Connected clients of each live pool; a pool whose status hash expired is gone."""
        if not pool_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool_id in pool_ids:
                pipe.hget(self.keys.pool_status(pool_id), PoolStatus.field("clients"))
            counts = await pipe.execute()
        clients = {
            pool_id: PoolStatus.parse("clients", n)
            for pool_id, n in zip(pool_ids, counts, strict=True)
            if n is not None
        }
        return {pool_id: n for pool_id, n in clients.items() if n is not None}

    async def request_checkpoint(self) -> str:
        """Create a pending checkpoint record, then send the command; returns its id."""
        checkpoint_id = uuid.uuid4().hex
        now = time.time()
        record = Checkpoint(id=checkpoint_id, status="pending", created_unix=now)
        # MULTI keeps the contract's order (record before command) and never leaves one without the other.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.checkpoints, checkpoint_id, record.to_json())
            pipe.xadd(
                self.keys.commands,
                Command(cmd="checkpoint", id=checkpoint_id, ts=round(now, 3)).to_fields(),  # type: ignore[arg-type]
                maxlen=COMMANDS_MAXLEN,
                approximate=True,
            )
            await pipe.execute()
        return checkpoint_id

    async def checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        raw = await self.redis.hget(self.keys.checkpoints, checkpoint_id)
        return None if raw is None else Checkpoint.from_json(checkpoint_id, raw)

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint record, newest first."""
        raw = await self.redis.hgetall(self.keys.checkpoints)
        records = [Checkpoint.from_json(text(k), v) for k, v in raw.items()]
        return sorted(records, key=lambda r: (r.created_unix or 0.0, r.id), reverse=True)


def _age(heartbeat: float | None, now: float | None = None) -> float | None:
    if heartbeat is None:
        return None
    return max(0.0, (time.time() if now is None else now) - heartbeat)
