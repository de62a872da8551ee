"""The cost table of ``impala bench e2e`` over a real, short ``impala local`` run: one row per process of
the stack, CPU-µs per env step of each read from ``/proc``, start-up and a client's round trip measured.
Speed is never asserted (style item 19): only that the rows are there and the numbers make sense."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from impala.core.processes import group_members
from impala.tools.bench import e2e
from impala.tools.bench.process_cpu import TOTAL, CpuReading, cost_table, format_table, read_cpu
from tests.support import wait_for

# Processes that work on every env step: each must show CPU time in any window.
BUSY = ("env-0", "actorpool-0", "learner", "learner children", "redis", TOTAL)
EVERY = (*BUSY, "weights", "control", "impala local")


def test_cost_table_sums_processes_into_rows() -> None:
    before = CpuReading({1: 1.0, 2: 0.5, 3: 2.0}, {1: "learner", 2: "learner children", 3: "redis"})
    after = CpuReading(
        {1: 1.5, 2: 0.75, 3: 2.1, 4: 0.05}, {1: "learner", 2: "learner children", 3: "redis", 4: "learner children"}
    )

    rows = {r.process: r for r in cost_table(before, after, wall_s=2.0, env_steps=1000)}

    assert list(rows) == ["learner", "learner children", "redis", TOTAL]
    assert rows["learner"].cpu_us_per_step == pytest.approx(500.0)
    assert rows["learner children"].cpu_s == pytest.approx(0.30)  # a process started in the window counts from 0
    assert rows[TOTAL].cpu_s == pytest.approx(0.90)
    assert rows[TOTAL].cores == pytest.approx(0.45)
    assert rows["redis"].cores_per_100k == pytest.approx(10.0)
    with pytest.raises(ValueError, match="env steps"):
        cost_table(before, after, wall_s=1.0, env_steps=0)


def test_read_cpu_names_a_service_and_its_children() -> None:
    # A service as impala local starts one: the leader of its own process group, with a helper in it.
    script = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    service = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_for(lambda: len(group_members(service.pid)), lambda n: n == 2, what="the helper to start")
        reading = read_cpu({"svc": service.pid}, supervisor=os.getpid())
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()

    assert sorted(reading.rows.values()) == ["impala local", "svc", "svc children"]
    assert reading.rows[service.pid] == "svc" and reading.rows[os.getpid()] == "impala local"
    assert all(s >= 0 for s in reading.seconds.values())


@pytest.mark.slow
def test_throughput_run_reports_every_process(tmp_path: Path) -> None:
    result = e2e.local_throughput(tmp_path, 4.0)

    rows = {r.process: r for r in result.costs}
    assert set(EVERY) <= set(rows), sorted(rows)
    for name in BUSY:
        assert rows[name].cpu_us_per_step > 0, rows[name]
    for row in rows.values():
        assert math.isfinite(row.cpu_us_per_step) and row.cpu_us_per_step >= 0, row
    assert rows[TOTAL].cpu_s == pytest.approx(sum(r.cpu_s for n, r in rows.items() if n != TOTAL))
    assert result.env_steps_per_s > 0 and result.startup_s > 0 and result.round_trip_s > 0
    assert "actorpool-0" in format_table(result.costs, 35.0)
