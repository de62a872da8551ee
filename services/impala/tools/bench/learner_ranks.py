"""Learner samples/s per number of ranks (``impala bench learner --ranks 1,2``): N real ``impala learner``
processes, one torch.distributed world (gloo on CPU, NCCL when the learners see a GPU), fed from a
Redis stream filled beforehand with CartPole rollouts (the preset's T and global B: each rank learns
B/N per update). The rate is the global env steps (samples) learned per second, read from rank 0's
status heartbeat over ``seconds`` after a warm-up, each figure next to the first rank count of the list.

Each rank runs as ``impala local`` runs its learners: one torch intra-op thread, a decode process.
On a machine with fewer cores than N × (learner + decode process) + redis-server, the ranks share the
cores, and the figure says what N costs rather than what it buys (docs/adr/0022-learner-ranks.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import redis

from impala.core.learn import LearnConfig
from impala.core.processes import stop_group
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import LearnerStatus
from impala.core.redis_server import RedisServer, free_port
from impala.tools.bench.learner import fill
from impala.tools.bench.report import Figure
from impala.tools.bench.rollouts import CARTPOLE, payload

ENV = "CartPole-v1"
WARMUP_STEPS = 20
STARTUP_BUDGET_S = 240.0
FILL_ROLLOUTS_PER_S = 12_000  # above what one or two CPU ranks learn here (~6k rollouts/s at B=8)


def _learner_env(url: str, run: str, workdir: Path, ranks: int, rank: int, port: int) -> dict[str, str]:
    config = LearnConfig.for_env(ENV)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    env.update(
        IMPALA_UNROLL_LENGTH=str(config.unroll_length),  # the stream's rollouts hold this T
        IMPALA_BATCH_SIZE=str(config.batch_size),
        IMPALA_RUN=run,
        IMPALA_REDIS_URL=url,
        IMPALA_ENV=ENV,
        IMPALA_WEIGHTS_ADDRESS="",
        IMPALA_CHECKPOINT_DIR=str(workdir / "ckpt"),
        IMPALA_CHECKPOINT_INTERVAL_S="3600",
        IMPALA_STATUS_INTERVAL_S="0.25",
        IMPALA_METRICS_PORT="0",
        IMPALA_DEVICE="auto",
        IMPALA_CONSUMER="bench",
        IMPALA_LOG_FORMAT="text",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    if ranks > 1:
        env.update(
            WORLD_SIZE=str(ranks), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    return env


def _status(client: redis.Redis, keys: RunKeys) -> dict[str, float]:
    status = LearnerStatus.from_hash(client.hgetall(keys.learner_status))
    return {k: float(getattr(status, k) or 0) for k in ("heartbeat", "env_steps", "learner_step")}


def samples_per_second(url: str, ranks: int, seconds: float, workdir: Path) -> float:
    """Global env steps/s of ``ranks`` learner processes over ``seconds`` after ``WARMUP_STEPS``."""
    keys = RunKeys(f"bench-ranks-{uuid.uuid4().hex[:8]}")
    config = LearnConfig.for_env(ENV)
    shape = replace(CARTPOLE, unroll_length=config.unroll_length, batch_size=config.batch_size)
    fill(url, keys, payload(shape), int(FILL_ROLLOUTS_PER_S * (seconds + 10)))
    port = free_port("127.0.0.1")
    procs = []
    for rank in range(ranks):
        with (workdir / f"{keys.run}-rank{rank}.log").open("wb") as out:
            env = _learner_env(url, keys.run, workdir / keys.run, ranks, rank, port)
            procs.append(subprocess.Popen([sys.executable, "-m", "impala", "learner"], env=env, stdout=out, stderr=out))
    try:
        with redis.Redis.from_url(url, socket_timeout=5.0) as client:
            deadline = time.monotonic() + STARTUP_BUDGET_S
            while (start := _status(client, keys))["learner_step"] < WARMUP_STEPS:
                _check(procs, deadline, workdir, keys.run)
                time.sleep(0.05)
            last = start
            while last["heartbeat"] - start["heartbeat"] < seconds:
                _check(procs, deadline + seconds + 60, workdir, keys.run)
                time.sleep(0.05)
                last = _status(client, keys)
            unread = int(client.xlen(keys.rollouts)) - int(client.xpending(keys.rollouts, "learners")["pending"])
            if unread <= 0:
                raise RuntimeError(f"the stream ran dry with {ranks} ranks; raise FILL_ROLLOUTS_PER_S")
            client.delete(keys.rollouts, keys.counters)
    finally:
        for proc in procs:
            stop_group(proc, 30)
    return (last["env_steps"] - start["env_steps"]) / (last["heartbeat"] - start["heartbeat"])


def _check(procs: list[subprocess.Popen[bytes]], deadline: float, workdir: Path, run: str) -> None:
    dead = [p.returncode for p in procs if p.poll() is not None]
    if dead or time.monotonic() > deadline:
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(workdir.glob(f"{run}-rank*.log")))
        raise RuntimeError(f"learner ranks {'exited ' + str(dead) if dead else 'too slow'}:\n{logs}")


def bench_learner_ranks(seconds: float, ranks: tuple[int, ...]) -> list[Figure]:
    """One figure per rank count, each against the first count of ``ranks``."""
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp, RedisServer(workdir=Path(tmp)) as server:
        for n in ranks:
            rates[n] = samples_per_second(server.url, n, seconds, Path(tmp))
    base = ranks[0]
    config = LearnConfig.for_env(ENV)
    name = f"learner {ENV} T={config.unroll_length} B={config.batch_size} fed from Redis"
    return [
        Figure(f"{name}, {n} rank{'s' * (n > 1)}", rate, "samples/s", f"{base} rank{'s' * (base > 1)}", rates[base])
        for n, rate in rates.items()
    ]
