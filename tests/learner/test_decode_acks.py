"""The decode process against a real redis-server: the acks of batches the parent learned from reach
Redis while the child waits for more rollouts, not after its read's wait runs out.

On a bounded buffer only those acks make room for the producers, so a read that waits out its whole
block with the acks queued behind it stalls the pool, the child and the learner together (issue 20:
one client of 16 envs ran the learner at 10 updates/s instead of ~50)."""

from __future__ import annotations

from pathlib import Path

import redis
from prometheus_client import CollectorRegistry

from impala.core.models import spec_from_settings
from impala.core.redis_server import RedisServer
from impala.learner.decode_process import DecodeConfig, DecodeProcess
from impala.learner.metrics import LearnerMetrics
from tests.support import wait_for

from .harness import KEYS, RUN, T, learner_settings, produce, rollout

LONGEST_BLOCK_MS = 5000  # the consumer's cap on one read's wait


def blocked_clients(client: redis.Redis) -> int:
    """Connections waiting in a blocking command (``CLIENT LIST`` flag ``b``)."""
    return sum("b" in str(c["flags"]) for c in client.client_list())


def test_acks_of_learned_batches_do_not_wait_for_the_read(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = learner_settings(redis_server.url, tmp_path)
    config = DecodeConfig(
        redis_url=redis_server.url,
        run=RUN,
        consumer="learner-0",
        claim_idle_s=30.0,
        spec=spec_from_settings(settings),
        unroll_length=T,
        batch_size=2,
        max_policy_lag=0,
        block_ms=LONGEST_BLOCK_MS,
        log_format="text",
    )
    source = DecodeProcess(config, "cpu", LearnerMetrics.create(CollectorRegistry()), current_version=lambda: 0)
    source.start()
    try:
        produce(redis_client, [rollout(seed=i) for i in range(2)])
        batch = wait_for(lambda: source.get(0.1), lambda b: b is not None)
        assert batch is not None
        # The stream is empty now: the child waits in a read for more, with free slots to fill.
        wait_for(lambda: blocked_clients(redis_client), lambda n: n == 1, what="the child waiting in a read")
        source.ack(batch.ids)
        source.recycle(batch)
        assert source.get(0.0) is None  # about to wait: the held slot and its acks go back to the child
        # Well inside one read's wait: the acks do not queue behind it.
        wait_for(lambda: redis_client.xlen(KEYS.rollouts), lambda n: n == 0, LONGEST_BLOCK_MS / 2000)
    finally:
        source.stop()
