"""End to end on CartPole-v1: env steps/s of the whole local stack (``impala local``: redis, weight
service, learner, control API, one ActorPool, two env client processes) and its time to solve, vs the
in-process trainer (``impala.core.inprocess.train_inprocess``: same model, presets and ``learn_step``,
no network) on the same seed, measured in the same run.

- env steps/s: ``impala local --no-target``; the learner's status heartbeat in Redis (``env_steps``
  stamped with ``heartbeat``, once a second) gives the rate over ``3 × seconds`` (at least 3 s), starting one
  heartbeat after the first learned step; then the stack gets SIGTERM.
- time to solve: ``impala local`` with the CartPole target (mean return ≥ 475 over 100 episodes),
  ``time_s`` of the first row at the target (from the start of the command, services' start-up
  included); mean over seeds 0..N-1. ``IMPALA_BENCH_E2E_SEEDS=N`` sets N (default 1, 0 skips it).
  A seed that does not solve within ``SOLVE_BUDGET_S`` is left out of the mean and counted in the name.
- the same time to solve with ``--learners 2`` (two gloo learner ranks, each learning B/2 of every
  batch; ADR 0022) next to ``--learners 1``, on the same seeds in the same run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from impala.core.inprocess import train_inprocess
from impala.core.presets import target_return
from impala.core.processes import stop_group
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import LearnerStatus
from impala.local.recorder import read_metrics
from impala.tools.bench.report import Figure

ENV = "CartPole-v1"
SEEDS_VARIABLE = "IMPALA_BENCH_E2E_SEEDS"
SOLVE_BUDGET_S = 300.0  # `impala local` solves CartPole in 1–2 min on 2 busy cores
STARTUP_BUDGET_S = 180.0
_STEPS_PER_SECOND_GUESS = 20_000  # sizes the in-process throughput run to about ``seconds``


class LocalRun:
    """``impala local`` as a subprocess in its own process group, with its run directory."""

    def __init__(self, workdir: Path, name: str, seed: int, *extra: str) -> None:
        self.run_dir, self.log = workdir / name, workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}  # only the flags count
        argv = [sys.executable, "-m", "impala", "local", "--env", ENV, "--run-dir", str(self.run_dir)]
        argv += ["--seed", str(seed), "--startup-timeout", str(STARTUP_BUDGET_S), *extra]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def rows(self) -> list[dict[str, float]]:
        path = self.run_dir / "metrics.csv"
        return read_metrics(path) if path.is_file() else []

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"impala local exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (the orderly stop of Ctrl-C), then SIGKILL of the whole group if it hangs."""
        stop_group(self.proc, 120)

    def heartbeats(self) -> Iterator[tuple[float, int]]:
        """(heartbeat unix s, env steps) of each new learner status once learning started."""
        endpoints = self.run_dir / "endpoints.json"
        while not endpoints.is_file():
            self.check_alive()
            time.sleep(0.25)
        doc = json.loads(endpoints.read_text())
        keys, last = RunKeys(doc["run"]), 0.0
        with redis.Redis.from_url(doc["redis_url"], socket_timeout=5.0) as client:
            while True:
                self.check_alive()
                status = LearnerStatus.from_hash(client.hgetall(keys.learner_status))
                beat, steps = status.heartbeat or 0.0, status.env_steps or 0
                if beat > last and steps > 0:
                    last = beat
                    yield beat, steps
                time.sleep(0.1)


def local_throughput(workdir: Path, seconds: float) -> float:
    run = LocalRun(workdir, "throughput", 0, "--no-target", "--max-seconds", str(STARTUP_BUDGET_S + seconds + 60))
    try:
        beats = run.heartbeats()
        next(beats)  # the first status after learning started includes the ramp-up
        start, start_steps = beat, steps = next(beats)
        while beat - start < seconds:
            beat, steps = next(beats)
        return (steps - start_steps) / (beat - start)
    finally:
        run.stop()


def local_time_to_solve(workdir: Path, seed: int, target: float, learners: int = 1) -> float:
    """Seconds from the start of ``impala local`` to the target, or NaN when the budget ran out."""
    flags = ["--target-return", str(target), "--max-seconds", str(SOLVE_BUDGET_S), "--learners", str(learners)]
    run = LocalRun(workdir, f"solve-{seed}-learners-{learners}", seed, *flags)
    try:
        run.proc.wait(SOLVE_BUDGET_S + STARTUP_BUDGET_S + 120)
    finally:
        run.stop()
    rows = run.rows()
    if not any(r["env_steps"] > 0 for r in rows):
        tail = run.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"impala local (seed {seed}) never learned; exit {run.proc.returncode}:\n{tail}")
    solved = [r for r in rows if r["episodes"] >= 100 and r["episode_return_mean"] >= target]
    return solved[0]["time_s"] if solved else math.nan


def inprocess_time_to_solve(seed: int, target: float) -> float:
    result = train_inprocess(ENV, seed=seed, target_return=target)
    return result.seconds if result.solved else math.nan


def seeds() -> int:
    return int(os.environ.get(SEEDS_VARIABLE, "1"))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def bench_e2e(seconds: float) -> list[Figure]:
    # 3 × seconds: the stack's rate swings ±30% from one second to the next on shared cores, and the
    # learner's status comes once a second.
    window = max(3 * seconds, 3.0)
    figures = []
    with tempfile.TemporaryDirectory(prefix="impala-bench-") as tmp:
        ours = local_throughput(Path(tmp), window)
        inproc = train_inprocess(ENV, seed=0, max_env_steps=max(1, int(_STEPS_PER_SECOND_GUESS * window)))
        base = inproc.env_steps / inproc.seconds
        figures.append(
            Figure(f"e2e {ENV} impala local (default flags)", ours, "env steps/s", "in-process trainer", base)
        )
        n, target = seeds(), target_return(ENV)
        if n > 0 and target is not None:
            local = [local_time_to_solve(Path(tmp), seed, target) for seed in range(n)]
            reference = [inprocess_time_to_solve(seed, target) for seed in range(n)]
            solved = sum(not math.isnan(t) for t in local)
            name = f"e2e {ENV} time to solve (≥{target:g}), mean of {solved}/{n} seeds solved"
            figures.append(Figure(name, _mean(local), "s (lower is better)", "in-process trainer", _mean(reference)))
            ranked = [local_time_to_solve(Path(tmp), seed, target, learners=2) for seed in range(n)]
            solved = sum(not math.isnan(t) for t in ranked)
            name = f"e2e {ENV} time to solve, --learners 2, mean of {solved}/{n} seeds solved"
            figures.append(Figure(name, _mean(ranked), "s (lower is better)", "--learners 1", _mean(local)))
    return figures
