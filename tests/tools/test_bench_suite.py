"""``impala bench suite`` end to end with a tiny budget: one real ``impala local`` per seed (the whole
stack as subprocesses), then a table whose numbers are those of each run's metrics.csv, and the PNGs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from impala.local.recorder import read_metrics
from impala.tools.bench.suite import PUBLISHED, markdown, read_seed

pytestmark = pytest.mark.slow


def test_suite_runs_each_seed_through_the_stack_and_tabulates_its_metrics(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    argv = [sys.executable, "-m", "impala", "bench", "suite", "--env", "CartPole-v1", "--seeds", "2"]
    argv += ["--max-env-steps", "300", "--suite-dir", str(suite)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = (suite / "results.md").read_text()
    assert table in result.stdout  # printed as written
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| seed")]
    assert len(rows) == 2
    for seed, row in enumerate(rows):
        run = suite / f"seed-{seed}"
        assert (run / "learning_curve.png").stat().st_size > 0
        last = read_metrics(run / "metrics.csv")[-1]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # seed, target (CartPole's reward_threshold), not reached in 300 steps, final return, env steps.
        assert cells[0] == str(seed) and cells[1] == "475"
        assert cells[2] == "not reached"
        final = [r["episode_return_mean"] for r in read_metrics(run / "metrics.csv")]
        final = [r for r in final if not math.isnan(r)]
        assert cells[4] == (f"{final[-1]:.1f}" if final else "—")
        assert cells[6] == f"{int(last['env_steps']):,}" and int(last["env_steps"]) >= 300
        assert cells[8] == "budget"
        assert cells[9] == f"[png](seed-{seed}/learning_curve.png)"
        assert read_seed(seed, run, 1, 300).end == "budget"
    assert (suite / "curves.png").stat().st_size > 0
    # The table of an env with a published number carries it, with its source.
    results = [read_seed(seed, suite / f"seed-{seed}", 1, 300) for seed in range(2)]
    assert PUBLISHED["Acrobot-v1"].source in markdown("Acrobot-v1", results, 300)
    assert "Published" not in table
    # Run again into the same directory: refused by name before any run, the first results untouched.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds seed-0, seed-1" in again.stderr
    assert (suite / "results.md").read_text() == table


def test_suite_is_not_part_of_bench_all() -> None:
    from impala.tools.bench.report import BENCHES

    assert "suite" not in BENCHES
