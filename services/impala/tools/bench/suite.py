"""``impala bench suite``: learning results through the whole stack, one ``impala local`` per seed.

Each seed runs ``python -m impala local --env ID --seed S --max-env-steps N`` as a subprocess (redis,
weight service, learner, control API, pools, env clients: what a user runs, not the in-process
trainer) into ``<suite dir>/seed-S``. The run's ``metrics.csv`` is the only source of the numbers:
env steps and wall-clock at the first row whose mean return over the last 100 episodes reaches the
target (the rule ``impala local`` stops on), the final mean return, and the last periodic
evaluation. The suite writes ``results.md`` (a table to paste into docs/results.md, next to the
published number for the env when one is known) and ``curves.png`` (every seed's curve). It is not
part of ``impala bench all``: it learns, for minutes to hours.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from impala.core.errors import UserError
from impala.local.recorder import plot_learning_curves, read_metrics
from impala.local.rundir import default_run_dir
from impala.local.status import Snapshot, target_reached


@dataclass(frozen=True)
class Published:
    """A published result to set ours against: the number, its budget and its source."""

    result: str
    env_steps: int
    source: str


# Only numbers we could check against their source. The budget is also the suite's default budget.
PUBLISHED: dict[str, Published] = {
    "Acrobot-v1": Published(
        "−89.9 ± 6.3 (PPO, 3 seeds)",
        500_000,
        "CleanRL `ppo.py` benchmark, https://docs.cleanrl.dev/rl-algorithms/ppo/",
    ),
}
DEFAULT_BUDGET = 1_000_000


@dataclass(frozen=True)
class SeedResult:
    """One seed's run, read from its ``metrics.csv`` and ``config.json``."""

    seed: int
    run_dir: Path
    exit_code: int
    target: float | None
    steps_to_target: int | None
    seconds_to_target: float | None
    final_return: float
    final_eval_return: float  # the last periodic evaluation's sampled mean (NaN when none ran)
    env_steps: int
    seconds: float
    budget: int

    @property
    def end(self) -> str:
        """``target``, ``budget`` (spent without reaching it; ``impala local`` exits 1) or ``failed``."""
        if self.steps_to_target is not None and self.exit_code == 0:
            return "target"
        if self.env_steps >= self.budget and self.exit_code in (0, 1):
            return "budget"
        return f"failed (exit {self.exit_code})"


def read_seed(seed: int, run_dir: Path, exit_code: int, budget: int) -> SeedResult:
    """The numbers of one finished ``impala local`` run directory."""
    if not (run_dir / "metrics.csv").is_file():  # it never started
        return SeedResult(seed, run_dir, exit_code, None, None, None, math.nan, math.nan, 0, 0.0, budget)
    config = json.loads((run_dir / "config.json").read_text())
    target = config["local"].get("target_return")
    rows = read_metrics(run_dir / "metrics.csv")
    hit = next((r for r in rows if target_reached(_snapshot(r), target)), None)
    returns = [r["episode_return_mean"] for r in rows if not math.isnan(r["episode_return_mean"])]
    evals = [r.get("eval_return_sampled", math.nan) for r in rows]
    evals = [e for e in evals if not math.isnan(e)]
    last = rows[-1] if rows else {"env_steps": 0.0, "time_s": 0.0}
    return SeedResult(
        seed=seed,
        run_dir=run_dir,
        exit_code=exit_code,
        target=None if target is None else float(target),
        steps_to_target=None if hit is None else int(hit["env_steps"]),
        seconds_to_target=None if hit is None else hit["time_s"],
        final_return=returns[-1] if returns else math.nan,
        final_eval_return=evals[-1] if evals else math.nan,
        env_steps=int(last["env_steps"]),
        seconds=last["time_s"],
        budget=budget,
    )


def _snapshot(row: dict[str, float]) -> Snapshot:
    return Snapshot(time_s=row["time_s"], episodes=int(row["episodes"]), episode_return_mean=row["episode_return_mean"])


def local_argv(env: str, seed: int, max_env_steps: int, run_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """The ``impala local`` command of one seed (this interpreter; no live display)."""
    return [
        sys.executable, "-m", "impala", "local", "--env", env, "--seed", str(seed),
        "--max-env-steps", str(max_env_steps), "--run-dir", str(run_dir), "--no-live", *extra,
    ]  # fmt: skip


def machine() -> str:
    """The machine the suite ran on, in one line."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores ({_cpu_model()}), {device}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "not reached" if value is None else "—" if math.isnan(value) else fmt.format(value)


def _curve(run_dir: Path) -> str:
    """A link to the run's learning curve (none before its first completed episodes)."""
    return f"[png]({run_dir.name}/learning_curve.png)" if (run_dir / "learning_curve.png").is_file() else "—"


def markdown(env: str, results: Sequence[SeedResult], max_env_steps: int, extra: Sequence[str] = ()) -> str:
    """The suite's table: one row per seed and a summary, with the published number when known."""
    flags = f" {shlex.join(extra)}" if extra else ""
    lines = [
        f"### {env}{flags}: {len(results)} seed(s), budget {max_env_steps:,} env steps",
        "",
        f"Command: `impala bench suite --env {env} --seeds {len(results)} --max-env-steps {max_env_steps}"
        + (f" --local-args {shlex.quote(shlex.join(extra))}" if extra else "")
        + "`; machine: "
        + machine()
        + ".",
        "",
        "| seed | target | env steps to target | wall-clock to target (s) | final mean return (100 ep.) "
        "| last eval return (sampled) | env steps | wall-clock (s) | end | curve |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.seed} | {_num(r.target, '{:g}') if r.target is not None else 'none'} | {_num(r.steps_to_target)} "
            f"| {_num(r.seconds_to_target, '{:.0f}')} | {_num(r.final_return, '{:.1f}')} "
            f"| {_num(r.final_eval_return, '{:.1f}')} | {r.env_steps:,} | {r.seconds:.0f} | {r.end} "
            f"| {_curve(r.run_dir)} |"
        )
    reached = [r.steps_to_target for r in results if r.steps_to_target is not None]
    finals = [r.final_return for r in results if not math.isnan(r.final_return)]
    summary = f"Target reached by {len(reached)}/{len(results)} seed(s)"
    if reached:
        summary += f", median {statistics.median(reached):,.0f} env steps"
    if finals:
        spread = f" ± {statistics.pstdev(finals):.1f}" if len(finals) > 1 else ""
        summary += f"; final mean return {statistics.fmean(finals):.1f}{spread}"
    lines += ["", summary + "."]
    if (published := PUBLISHED.get(env)) is not None:
        lines.append(f"Published: {published.result} at {published.env_steps:,} env steps, {published.source}.")
    return "\n".join(lines) + "\n"


def run_suite(
    env: str, seeds: int, max_env_steps: int | None, suite_dir: Path | None = None, extra: Sequence[str] = ()
) -> int:
    """Run every seed, write ``results.md`` and ``curves.png``, print the table; 0 when every run ended
    cleanly (target reached or budget spent), 1 when one failed."""
    budget = max_env_steps or (PUBLISHED[env].env_steps if env in PUBLISHED else DEFAULT_BUDGET)
    suite_dir = suite_dir or default_run_dir(env, Path("runs") / "suite")
    held = [name for seed in range(seeds) if (suite_dir / (name := f"seed-{seed}")).exists()]
    if held:  # a seed's impala local would refuse its run dir, and its old numbers would read as new
        raise UserError(f"{suite_dir} already holds {', '.join(held)}: give another --suite-dir or remove those")
    suite_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(seeds):
        run_dir = suite_dir / f"seed-{seed}"
        started = time.monotonic()
        with (suite_dir / f"seed-{seed}.log").open("w") as out:
            code = subprocess.run(
                local_argv(env, seed, budget, run_dir, extra), stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        sys.stderr.write(f"seed {seed}: exit {code} after {time.monotonic() - started:.0f} s ({run_dir})\n")
        results.append(read_seed(seed, run_dir, code, budget))
    table = markdown(env, results, budget, extra)
    (suite_dir / "results.md").write_text(table)
    target = results[0].target if results else None
    curves = {f"seed {r.seed}": r.run_dir / "metrics.csv" for r in results}
    plot_learning_curves(curves, suite_dir / "curves.png", f"{env}: {seeds} seed(s)", target)
    sys.stdout.write(table + f"\n(written to {suite_dir / 'results.md'} and {suite_dir / 'curves.png'})\n")
    return 0 if all(r.end in ("target", "budget") for r in results) else 1
