"""Learner updates/s fed from Redis (the real path: ``DecodeProcess`` (read, decode, screen, collate into
shared memory in a child process) → ``TrainingLoop`` (learn, ack)) vs the same ``learn_step`` on batches
collated beforehand in memory, for the CartPole preset (MLP, T and B of ``impala.core.presets``) and
Atari-size rollouts (shallow CNN, torchbeast's T=80, B=8).

Both run with one torch intra-op thread (as ``impala local`` runs its learner), leaving the other core
to the decode process and redis-server. The stream is filled before the Redis path starts, so no
producer competes for the cores. The two paths alternate over ``ROUNDS`` rounds of ``seconds / ROUNDS``
(at least ``MIN_STEPS`` updates each) and each figure is the median. Weight publishing and the control thread are left out: they cost
the same whatever feeds the batches (the weights benchmark measures publishing).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import redis
import torch
from prometheus_client import CollectorRegistry

from impala.core.batch import collate
from impala.core.learn import LearnConfig, learn_step, make_learner_state
from impala.core.presets import preset
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer
from impala.learner.checkpointing import Checkpointer
from impala.learner.loop import Acknowledger, TrainingLoop
from impala.learner.main import build_prefetcher
from impala.learner.metrics import LearnerMetrics
from impala.learner.progress import Progress
from impala.learner.settings import LearnerSettings
from impala.tools.bench.report import Figure
from impala.tools.bench.rollouts import ATARI, CARTPOLE, Shape, payload, record

ROUNDS = 3
MIN_STEPS = 3  # updates measured per round at least (an Atari-size update takes ~0.3 s or more here)
WARMUP_STEPS = 4  # more than the prefetch depth: the batches prepared before the start are not counted
_FILL_MARGIN = 1.5  # rollouts written for the Redis path: this many times what the in-memory rate needs


def cases() -> list[tuple[Shape, LearnConfig]]:
    cartpole = LearnConfig(**preset("CartPole-v1").learn)
    atari = LearnConfig()
    return [
        (replace(CARTPOLE, unroll_length=cartpole.unroll_length, batch_size=cartpole.batch_size), cartpole),
        (replace(ATARI, unroll_length=atari.unroll_length, batch_size=atari.batch_size), atari),
    ]


def in_memory(shape: Shape, config: LearnConfig, seconds: float) -> float:
    """Updates/s of ``learn_step`` alone, cycling over two batches collated beforehand."""
    torch.manual_seed(0)
    state = make_learner_state(shape.spec, config)
    B = config.batch_size
    records = [record(shape, seed=i) for i in range(2 * B)]
    batches = [collate(records[:B], "cpu"), collate(records[B:], "cpu")]
    for i in range(WARMUP_STEPS):
        learn_step(state, batches[i % 2], config)
    steps, started = 0, time.monotonic()
    while (now := time.monotonic()) < started + seconds or steps < MIN_STEPS:
        learn_step(state, batches[steps % 2], config)
        steps += 1
    return steps / (now - started)


@dataclass
class AckClock:
    """Stands between the loop and the consumer: times the acks (one per update) and stops the loop
    ``seconds`` after the warm-up."""

    consumer: Acknowledger
    seconds: float
    stop: threading.Event
    acks: int = 0
    started: float = 0.0
    counted: int = 0
    elapsed: float = float("nan")

    def ack(self, ids: Sequence[str]) -> int:
        done = self.consumer.ack(ids)
        self.acks += 1
        now = time.monotonic()
        if self.acks == WARMUP_STEPS:
            self.started = now
        elif self.acks >= WARMUP_STEPS + MIN_STEPS and now >= self.started + self.seconds and not self.stop.is_set():
            self.counted, self.elapsed = self.acks - WARMUP_STEPS, now - self.started
            self.stop.set()
        return done


def fill(url: str, keys: RunKeys, data: bytes, count: int) -> None:
    with redis.Redis.from_url(url) as client:
        for start in range(0, count, 256):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(256, count - start)):
                pipe.xadd(keys.rollouts, {"r": data})
            pipe.execute()


def from_redis(url: str, shape: Shape, config: LearnConfig, seconds: float, expected_rate: float) -> float:
    """Updates/s of the learner's loop reading a stream filled with enough rollouts for ``seconds``."""
    keys = RunKeys(f"bench-{uuid.uuid4().hex[:8]}")
    steps = max(int(expected_rate * seconds * _FILL_MARGIN), MIN_STEPS) + 2 * WARMUP_STEPS + 4
    fill(url, keys, payload(shape), steps * config.batch_size)
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp:
        settings = LearnerSettings(redis_url=url, run=keys.run, consumer="bench", checkpoint_dir=Path(tmp))
        torch.manual_seed(0)
        state, progress = make_learner_state(shape.spec, config), Progress()
        metrics = LearnerMetrics.create(CollectorRegistry())
        prefetcher = build_prefetcher(
            settings,
            shape.spec,
            config,
            "cpu",
            current_version=lambda: progress.policy_version,
            metrics=metrics,
        )
        stop = threading.Event()
        clock = AckClock(prefetcher, seconds, stop)
        checkpointer = Checkpointer(Path(tmp), keep=1, interval_s=3600.0, config={})
        loop = TrainingLoop(state, config, prefetcher, clock, checkpointer, None, metrics, progress)
        watchdog = threading.Timer(3 * seconds + 60, stop.set)  # a starved loop must still end
        watchdog.start()
        prefetcher.start()
        try:
            loop.run(stop)
        finally:
            watchdog.cancel()
            prefetcher.stop()
    with redis.Redis.from_url(url) as client:
        client.delete(keys.rollouts, keys.counters)
    if clock.counted == 0:
        raise RuntimeError(f"the learner took {clock.acks} steps in {3 * seconds + 60:.0f} s")
    return clock.counted / clock.elapsed


def bench_learner(seconds: float) -> list[Figure]:
    figures = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp, RedisServer(workdir=Path(tmp)) as server:
            for shape, config in cases():
                memory, fed = [], []
                for _ in range(ROUNDS):
                    memory.append(in_memory(shape, config, seconds / ROUNDS))
                    fed.append(from_redis(server.url, shape, config, seconds / ROUNDS, memory[-1]))
                name = f"learner {shape.name} T={config.unroll_length} B={config.batch_size} fed from Redis"
                figures.append(
                    Figure(
                        name,
                        statistics.median(fed),
                        "updates/s",
                        "same learn_step, batches in memory",
                        statistics.median(memory),
                    )
                )
    finally:
        torch.set_num_threads(threads)
    return figures
