"""The live ActorPool replicas of a run, read from the heartbeats they write (``PoolStatus``).

A pool adds its id to ``RunKeys.pools`` (scored by its last heartbeat) and rewrites its status hash,
which expires when the heartbeats stop. A pool is live when its score is fresh and its hash still
exists; ids of pools that died without removing themselves stay in the sorted set and are skipped.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from impala.core.redis_keys import RunKeys
from impala.core.redis_records import PoolStatus, text

POOL_FRESH_S = 30.0  # a heartbeat older than this is a dead pool's (pools beat every second or so)


def live_pools(client: redis.Redis, keys: RunKeys, *, fresh_s: float = POOL_FRESH_S) -> dict[str, PoolStatus]:
    """Status of every live pool by id, in two round trips (raises ``redis.RedisError`` when Redis is
    unreachable)."""
    pool_ids: Any = client.zrangebyscore(keys.pools, time.time() - fresh_s, "+inf")
    ids = [text(pool_id) for pool_id in pool_ids]
    if not ids:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for pool_id in ids:
            pipe.hgetall(keys.pool_status(pool_id))
        hashes = pipe.execute()
    return {pool_id: PoolStatus.from_hash(raw) for pool_id, raw in zip(ids, hashes, strict=True) if raw}
