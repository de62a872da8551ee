"""Learner updates/s fed from Redis (the real path: ``DecodeProcess`` (read, decode, screen, collate into
shared memory in a child process) → ``TrainingLoop`` (learn, ack, account)) vs the same ``TrainingLoop``
fed in memory (batches collated beforehand), for the CartPole preset (MLP, T and B of
``impala.core.presets``) and Atari-size rollouts (shallow CNN, torchbeast's T=80, B=8). A second figure
per case sets the Redis-fed loop against bare ``learn_step`` calls (no loop, no metrics): the whole
price of being a service.

All run with one torch intra-op thread (as ``impala local`` runs its learner), leaving the other core
to the decode process and redis-server. The stream is filled before the Redis path starts, so no
producer competes for the cores. The three paths alternate over ``ROUNDS`` rounds of
``seconds / ROUNDS`` (at least ``MIN_STEPS`` updates each) and each figure is the median. Weight
publishing and the control thread are left out: they cost the same whatever feeds the batches (the
weights benchmark measures publishing).
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

from impala.core.batch import Batch, collate
from impala.core.learn import LearnConfig, learn_step, make_learner_state
from impala.core.redis_keys import RunKeys
from impala.core.redis_server import RedisServer
from impala.learner.checkpointing import Checkpointer
from impala.learner.loop import Acknowledger, TrainingLoop
from impala.learner.main import build_prefetcher
from impala.learner.metrics import LearnerMetrics
from impala.learner.prefetch import BatchSource, Prepared
from impala.learner.progress import Progress
from impala.learner.settings import LearnerSettings
from impala.tools.bench.report import Figure
from impala.tools.bench.rollouts import ATARI, CARTPOLE, Shape, payload, record

ROUNDS = 3
MIN_STEPS = 3  # updates measured per round at least (an Atari-size update takes ~0.3 s or more here)
WARMUP_STEPS = 4  # more than the prefetch depth: the batches prepared before the start are not counted
_FILL_MARGIN = 1.5  # rollouts written for the Redis path: this many times what the in-memory rate needs


def cases() -> list[tuple[Shape, LearnConfig]]:
    cartpole = LearnConfig.for_env("CartPole-v1")
    atari = LearnConfig.for_env("ALE/Pong-v5")
    return [
        (replace(CARTPOLE, unroll_length=cartpole.unroll_length, batch_size=cartpole.batch_size), cartpole),
        (replace(ATARI, unroll_length=atari.unroll_length, batch_size=atari.batch_size), atari),
    ]


def _batches(shape: Shape, config: LearnConfig) -> list[Batch]:
    B = config.batch_size
    records = [record(shape, seed=i) for i in range(2 * B)]
    return [collate(records[:B], "cpu"), collate(records[B:], "cpu")]


def bare(shape: Shape, config: LearnConfig, seconds: float) -> float:
    """Updates/s of ``learn_step`` alone, cycling over two batches collated beforehand."""
    torch.manual_seed(0)
    state = make_learner_state(shape.spec, config)
    batches = _batches(shape, config)
    for i in range(WARMUP_STEPS):
        learn_step(state, batches[i % 2], config)
    steps, started = 0, time.monotonic()
    while (now := time.monotonic()) < started + seconds or steps < MIN_STEPS:
        learn_step(state, batches[steps % 2], config)
        steps += 1
    return steps / (now - started)


@dataclass
class InMemoryFeed:
    """A ``BatchSource`` that hands out batches collated beforehand, in turn (nothing to acknowledge)."""

    batches: list[Batch]
    served: int = 0

    def start(self) -> None:
        pass

    def stop(self, timeout_s: float = 0.0) -> None:
        pass

    def get(self, timeout_s: float) -> Prepared[Batch] | None:
        batch = self.batches[self.served % len(self.batches)]
        self.served += 1
        ids = [f"{self.served}-{b}" for b in range(batch.reward.shape[1])]
        return Prepared(batch, ids, batch.num_steps, [0] * len(ids))

    def ack(self, ids: Sequence[str]) -> int:
        return len(ids)

    def recycle(self, prepared: Prepared[Batch]) -> None:
        pass


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


def run_loop(
    source: BatchSource[Batch],
    shape: Shape,
    config: LearnConfig,
    seconds: float,
    workdir: Path,
    progress: Progress | None = None,
) -> float:
    """Updates/s of a ``TrainingLoop`` taking its batches from ``source`` (timed from its acks)."""
    torch.manual_seed(0)
    state, progress = make_learner_state(shape.spec, config), progress or Progress()
    stop = threading.Event()
    clock = AckClock(source, seconds, stop)
    checkpointer = Checkpointer(workdir, keep=1, interval_s=3600.0, config={})
    loop = TrainingLoop(state, config, source, clock, checkpointer, None, _metrics(), progress)
    watchdog = threading.Timer(3 * seconds + 60, stop.set)  # a starved loop must still end
    watchdog.start()
    source.start()
    try:
        loop.run(stop)
    finally:
        watchdog.cancel()
        source.stop()
    if clock.counted == 0:
        raise RuntimeError(f"the learner took {clock.acks} steps in {3 * seconds + 60:.0f} s")
    return clock.counted / clock.elapsed


def _metrics() -> LearnerMetrics:
    return LearnerMetrics.create(CollectorRegistry())


def fed_in_memory(shape: Shape, config: LearnConfig, seconds: float) -> float:
    """Updates/s of the learner's loop fed batches collated beforehand."""
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp:
        return run_loop(InMemoryFeed(_batches(shape, config)), shape, config, seconds, Path(tmp))


def from_redis(url: str, shape: Shape, config: LearnConfig, seconds: float, expected_rate: float) -> float:
    """Updates/s of the learner's loop reading a stream filled with enough rollouts for ``seconds``."""
    keys = RunKeys(f"bench-{uuid.uuid4().hex[:8]}")
    steps = max(int(expected_rate * seconds * _FILL_MARGIN), MIN_STEPS) + 2 * WARMUP_STEPS + 4
    fill(url, keys, payload(shape), steps * config.batch_size)
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp:
        settings = LearnerSettings(redis_url=url, run=keys.run, consumer="bench", checkpoint_dir=Path(tmp))
        progress = Progress()
        source = build_prefetcher(
            settings, shape.spec, config, "cpu", current_version=lambda: progress.policy_version, metrics=_metrics()
        )
        rate = run_loop(source, shape, config, seconds, Path(tmp), progress)
    with redis.Redis.from_url(url) as client:
        client.delete(keys.rollouts, keys.counters)
    return rate


def bench_learner(seconds: float) -> list[Figure]:
    figures = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp, RedisServer(workdir=Path(tmp)) as server:
            for shape, config in cases():
                alone, memory, fed = [], [], []
                for _ in range(ROUNDS):
                    alone.append(bare(shape, config, seconds / ROUNDS))
                    memory.append(fed_in_memory(shape, config, seconds / ROUNDS))
                    fed.append(from_redis(server.url, shape, config, seconds / ROUNDS, memory[-1]))
                name = f"learner {shape.name} T={config.unroll_length} B={config.batch_size} fed from Redis"
                rate = statistics.median(fed)
                figures += [
                    Figure(name, rate, "updates/s", "same loop fed in memory", statistics.median(memory)),
                    Figure(name, rate, "updates/s", "bare learn_step, no loop", statistics.median(alone)),
                ]
    finally:
        torch.set_num_threads(threads)
    return figures
