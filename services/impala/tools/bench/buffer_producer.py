"""Producer half of the buffer benchmark, in its own process as in a deployment (the pool writes, the
learner reads): ``python -m impala.tools.bench.buffer_producer {impala|raw} URL RUN CAPACITY PAYLOAD_FILE``.

Writes the payload's bytes as rollouts until killed. ``impala`` is ``RolloutProducer.put`` (one
MULTI/EXEC of XADD, HINCRBY and XLEN per rollout, backpressure at ``CAPACITY``); ``raw`` is a bare
redis-py ``XADD`` loop that reads ``XLEN`` every few adds only to hold the stream near the same
capacity (without it an Atari-size stream would grow by 1.5 GB/s)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import redis

from impala.buffer.producer import RolloutProducer
from impala.core import heap
from impala.core.redis_keys import RunKeys


async def produce_impala(url: str, keys: RunKeys, capacity: int, payload: bytes) -> None:
    producer = RolloutProducer(url, keys, capacity=capacity, producer_id="bench")
    while True:
        await producer.put(payload)


def produce_raw(url: str, keys: RunKeys, capacity: int, payload: bytes) -> None:
    client = redis.Redis.from_url(url)
    check_every = max(1, capacity // 8)
    added = 0
    while True:
        client.xadd(keys.rollouts, {"r": payload})
        added += 1
        if added % check_every == 0:
            while client.xlen(keys.rollouts) >= capacity:
                time.sleep(0.001)


def main(argv: list[str]) -> None:
    kind, url, run, capacity_arg, payload_file = argv
    keys, capacity, payload = RunKeys(run), int(capacity_arg), Path(payload_file).read_bytes()
    heap.retain_freed_memory()  # as the pool that produces in a deployment; the raw loop gets the same
    if kind == "impala":
        asyncio.run(produce_impala(url, keys, capacity, payload))
    else:
        produce_raw(url, keys, capacity, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
