"""End to end on CartPole-v1: env steps/s of the whole local stack (``impala local``: redis, weight
service, learner, control API, one ActorPool, its env client process) and its time to solve, vs the
in-process trainer (``impala.core.inprocess.train_inprocess``: same model, presets and ``learn_step``,
no network) on the same seed, measured in the same run.

- env steps/s: ``impala local --no-target``; the learner's status heartbeat in Redis (``env_steps``
  stamped with ``heartbeat``, once a second) gives the rate over ``3 × seconds`` (at least 3 s), starting one
  heartbeat after the first learned step; then the stack gets SIGTERM.
- time to solve: ``impala local`` with the CartPole target (mean return ≥ 475 over 100 episodes),
  from its launch (interpreter and services' start-up included) to the first row at the target in
  its ``metrics.csv``; mean over seeds 0..N-1. ``IMPALA_BENCH_E2E_SEEDS=N`` sets N (default 1, 0 skips it).
  A seed that does not solve within ``SOLVE_BUDGET_S`` is left out of the mean and counted in the name.
- the same time to solve with ``--learners 2`` (two gloo learner ranks, each learning B/2 of every
  batch; ADR 0022) next to ``--learners 1``, on the same seeds in the same run
  (``IMPALA_BENCH_E2E_RANKS=0`` leaves it out).
- env steps to solve next to the in-process trainer's (sample efficiency: speed must not be bought
  with samples), and the in-process trainer's time to solve as a child process, launch to exit, so
  both sides include their start-up.
- where the time goes, from the throughput run: start-up (launch → the pool's first env step, read
  from its ``impala_actorpool_env_steps_total`` every 50 ms), the env step round trip of a client
  (a client has one Step in flight, so its cycle Step → Actions → next Step is its envs / its env
  steps/s; the in-process trainer's cycle is one step of its vector env and one forward pass), and the
  CPU-µs per env step of every process of the stack over the window (``process_cpu``), each next to
  the in-process trainer's whole process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from impala.core.inprocess import train_inprocess
from impala.core.presets import preset, target_return
from impala.core.processes import stop_group
from impala.core.redis_keys import RunKeys
from impala.core.redis_records import LearnerStatus
from impala.local.recorder import read_metrics
from impala.tools.bench.process_cpu import TOTAL, CostRow, cost_table, format_table, read_cpu, read_endpoint_pids
from impala.tools.bench.report import Figure

ENV = "CartPole-v1"
SEEDS_VARIABLE = "IMPALA_BENCH_E2E_SEEDS"
RANKS_VARIABLE = "IMPALA_BENCH_E2E_RANKS"  # "0" leaves out the --learners 2 comparison
SOLVE_BUDGET_S = 300.0  # `impala local` solves CartPole in 1–2 min on 2 busy cores
STARTUP_BUDGET_S = 180.0
_STEPS_PER_SECOND_GUESS = 20_000  # sizes the in-process throughput run to about ``seconds``
_POOL_STEPS_METRIC = "impala_actorpool_env_steps_total"


class LocalRun:
    """``impala local`` as a subprocess in its own process group, with its run directory."""

    def __init__(self, workdir: Path, name: str, seed: int, *extra: str) -> None:
        self.run_dir, self.log = workdir / name, workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}  # only the flags count
        argv = [sys.executable, "-m", "impala", "local", "--env", ENV, "--run-dir", str(self.run_dir)]
        argv += ["--seed", str(seed), "--startup-timeout", str(STARTUP_BUDGET_S), *extra]
        self.launched = time.monotonic()
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

    def endpoints(self) -> dict[str, object]:
        """The run's ``endpoints.json`` (written once the env clients are started)."""
        path = self.run_dir / "endpoints.json"
        while not path.is_file():
            self.check_alive()
            time.sleep(0.05)
        doc: dict[str, object] = json.loads(path.read_text())
        return doc

    def startup_s(self) -> float:
        """Seconds from the launch to the first env step the pool acted on (polled every 50 ms)."""
        metrics = self.endpoints()["metrics"]
        assert isinstance(metrics, dict)
        url = str(metrics["actorpool-0"])
        while True:
            self.check_alive()
            with urllib.request.urlopen(url, timeout=5.0) as reply:
                text = reply.read().decode()
            if _counter(text, _POOL_STEPS_METRIC) > 0:
                return time.monotonic() - self.launched
            time.sleep(0.05)

    def heartbeats(self) -> Iterator[tuple[float, int]]:
        """(heartbeat unix s, env steps) of each new learner status once learning started."""
        doc = self.endpoints()
        keys, last = RunKeys(str(doc["run"])), 0.0
        with redis.Redis.from_url(str(doc["redis_url"]), socket_timeout=5.0) as client:
            while True:
                self.check_alive()
                status = LearnerStatus.from_hash(client.hgetall(keys.learner_status))
                beat, steps = status.heartbeat or 0.0, status.env_steps or 0
                if beat > last and steps > 0:
                    last = beat
                    yield beat, steps
                time.sleep(0.1)


def _counter(exposition: str, name: str) -> float:
    """Sum of a counter's samples in a Prometheus text exposition (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(name))


@dataclass(frozen=True)
class Throughput:
    """The throughput run of ``impala local``: its rate, start-up, a client's round trip, and the cost table."""

    env_steps_per_s: float
    startup_s: float
    round_trip_s: float  # one client's Step → Actions → next Step (its envs / its env steps/s)
    costs: list[CostRow]
    envs_per_step: int  # envs per client


def local_throughput(workdir: Path, seconds: float, extra: Sequence[str] = (), name: str = "throughput") -> Throughput:
    """``impala local --no-target`` (plus ``extra`` flags) measured over ``seconds`` of learning."""
    budget = str(STARTUP_BUDGET_S + seconds + 60)
    run = LocalRun(workdir, name, 0, "--no-target", "--max-seconds", budget, *extra)
    try:
        startup = run.startup_s()
        layout = json.loads((run.run_dir / "config.json").read_text())["local"]
        envs = int(layout["envs_per_client"])  # each client has one Step of ``envs`` in flight
        services = read_endpoint_pids(run.run_dir / "endpoints.json")
        beats = run.heartbeats()
        next(beats)  # the first status after learning started includes the ramp-up
        start, start_steps = beat, steps = next(beats)
        before = read_cpu(services, run.proc.pid)
        while beat - start < seconds:
            beat, steps = next(beats)
        after = read_cpu(services, run.proc.pid)
        rate = (steps - start_steps) / (beat - start)
        costs = cost_table(before, after, beat - start, steps - start_steps)
        return Throughput(rate, startup, int(layout["clients"]) * envs / rate, costs, envs)
    finally:
        run.stop()


@dataclass(frozen=True)
class InProcess:
    """The in-process trainer's throughput run: env steps/s, CPU-µs per env step, its vector env's cycle."""

    env_steps_per_s: float
    cpu_us_per_step: float
    round_trip_s: float


def inprocess_throughput(seconds: float) -> InProcess:
    cpu = time.process_time()
    result = train_inprocess(ENV, seed=0, max_env_steps=max(1, int(_STEPS_PER_SECOND_GUESS * seconds)))
    cpu = time.process_time() - cpu
    rate = result.env_steps / result.seconds
    return InProcess(rate, cpu * 1e6 / result.env_steps, preset(ENV).num_envs / rate)


@dataclass(frozen=True)
class Solve:
    """Seconds from launch to the target and the env steps it took (NaN when the budget ran out)."""

    seconds: float
    env_steps: float


def local_time_to_solve(workdir: Path, seed: int, target: float, learners: int = 1) -> Solve:
    """``impala local`` from its launch (the interpreter's start-up included) to the moment its
    ``metrics.csv`` shows the target (read every 0.25 s; the stack writes a row a second)."""
    flags = ["--target-return", str(target), "--max-seconds", str(SOLVE_BUDGET_S), "--learners", str(learners)]
    run = LocalRun(workdir, f"solve-{seed}-learners-{learners}", seed, *flags)
    seen: Solve | None = None
    deadline = run.launched + SOLVE_BUDGET_S + STARTUP_BUDGET_S + 120
    try:
        while run.proc.poll() is None and time.monotonic() < deadline:
            if seen is None and (hit := _solved(run.rows(), target)) is not None:
                seen = Solve(time.monotonic() - run.launched, hit["env_steps"])
            time.sleep(0.25)
    finally:
        run.stop()
    rows = run.rows()
    if not any(r["env_steps"] > 0 for r in rows):
        tail = run.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"impala local (seed {seed}) never learned; exit {run.proc.returncode}:\n{tail}")
    return seen or Solve(math.nan, math.nan)  # the stack stops for seconds after the row: never missed


def _solved(rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first row at the target (mean return over at least 100 episodes)."""
    return next((r for r in rows if r["episodes"] >= 100 and r["episode_return_mean"] >= target), None)


def inprocess_time_to_solve(seed: int, target: float) -> Solve:
    """The in-process trainer as a child process (``python -m impala.tools.bench.e2e SEED TARGET``), from
    its launch to its exit, so that its interpreter's start-up and imports count as ``impala local``'s do."""
    launched = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "impala.tools.bench.e2e", str(seed), str(target)],
        check=True,
        capture_output=True,
        text=True,
        timeout=SOLVE_BUDGET_S + STARTUP_BUDGET_S,
    )
    seconds = time.monotonic() - launched
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return Solve(seconds, doc["env_steps"]) if doc["solved"] else Solve(math.nan, math.nan)


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
        base = inprocess_throughput(window)
        trainer = "in-process trainer"
        figures.append(
            Figure(
                f"e2e {ENV} impala local (default flags)",
                ours.env_steps_per_s,
                "env steps/s",
                trainer,
                base.env_steps_per_s,
            )
        )
        figures.append(
            Figure(
                f"e2e {ENV} client round trip (Step → Actions → next Step), {ours.envs_per_step} envs",
                ours.round_trip_s * 1e3,
                "ms (lower is better)",
                f"{trainer}: one step of its {preset(ENV).num_envs} envs",
                base.round_trip_s * 1e3,
            )
        )
        startup = inprocess_startup_s()
        figures.append(
            Figure(f"e2e {ENV} start-up, launch → first env step", ours.startup_s, "s (lower is better)",
                   f"{trainer}: launch → exit after one unroll", startup)
        )  # fmt: skip
        # The whole stack's CPU per env step is a figure; the table of every process is printed (and kept in
        # docs/performance.md): an idle process shows 0 there.
        total = next(row for row in ours.costs if row.process == TOTAL)
        name, unit = f"e2e {ENV} CPU per env step, every process of the stack", "CPU-µs per env step"
        figures.append(Figure(name, total.cpu_us_per_step, unit, f"{trainer} (whole process)", base.cpu_us_per_step))
        print(format_table(ours.costs, base.cpu_us_per_step), flush=True)
        n, target = seeds(), target_return(ENV)
        if n > 0 and target is not None:
            local = [local_time_to_solve(Path(tmp), seed, target) for seed in range(n)]
            reference = [inprocess_time_to_solve(seed, target) for seed in range(n)]
            solved = sum(not math.isnan(t.seconds) for t in local)
            name = f"e2e {ENV} time to solve (≥{target:g}), mean of {solved}/{n} seeds solved"
            baseline = f"{trainer}, launch to exit"
            figures.append(Figure(name, _mean([t.seconds for t in local]), "s (lower is better)", baseline,
                                  _mean([t.seconds for t in reference])))  # fmt: skip
            name = f"e2e {ENV} env steps to solve, mean of {solved}/{n} seeds solved"
            figures.append(Figure(name, _mean([t.env_steps for t in local]), "env steps (lower is better)", trainer,
                                  _mean([t.env_steps for t in reference])))  # fmt: skip
            for seed, (ours_t, ref_t) in enumerate(zip(local, reference, strict=True)):
                print(f"seed {seed}: impala local {ours_t.seconds:.1f} s, {ours_t.env_steps:,.0f} env steps; "
                      f"in-process {ref_t.seconds:.1f} s, {ref_t.env_steps:,.0f} env steps", flush=True)  # fmt: skip
            if os.environ.get(RANKS_VARIABLE, "1") == "0":
                return figures
            ranked = [local_time_to_solve(Path(tmp), seed, target, learners=2).seconds for seed in range(n)]
            solved = sum(not math.isnan(t) for t in ranked)
            name = f"e2e {ENV} time to solve, --learners 2, mean of {solved}/{n} seeds solved"
            figures.append(Figure(name, _mean(ranked), "s (lower is better)", "--learners 1",
                                  _mean([t.seconds for t in local])))  # fmt: skip
    return figures


def inprocess_startup_s() -> float:
    """The in-process trainer as a child process that stops after one unroll: launch to exit."""
    launched = time.monotonic()
    subprocess.run([sys.executable, "-m", "impala.tools.bench.e2e", "0", "nan", "1"], check=True, capture_output=True)
    return time.monotonic() - launched


def main(argv: list[str]) -> None:
    """``python -m impala.tools.bench.e2e SEED TARGET [MAX_ENV_STEPS]``: the in-process trainer; prints its result
    as one JSON line."""
    seed, target = int(argv[0]), float(argv[1])
    kwargs: dict[str, Any] = {"max_env_steps": int(argv[2])} if len(argv) > 2 else {}
    result = train_inprocess(ENV, seed=seed, target_return=None if math.isnan(target) else target, **kwargs)
    print(json.dumps({"solved": result.solved, "env_steps": result.env_steps, "seconds": result.seconds}))


if __name__ == "__main__":
    main(sys.argv[1:])
