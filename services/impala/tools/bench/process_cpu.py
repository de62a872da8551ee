"""Where the CPU of a running ``impala local`` goes: CPU time per env step of each of its processes.

Read from ``/proc/<pid>/stat`` (user + system time, in clock ticks) at the start and the end of a
measuring window, for every process of every service named in the run's ``endpoints.json`` (a service
leads its own process group, so its helpers, such as the learner's decode process, are found as the
members of that group), plus the ``impala local`` supervisor itself. Dividing each process's CPU time
in the window by the env steps learned in it gives CPU-µs per env step; the same number divided by ten
is the cores one service needs per 100k env steps/s.

Linux only (``/proc``); torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from impala.core.processes import group_members, proc_stat

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_UTIME, _STIME = 11, 12  # indices in proc_stat's fields (stat fields 14 and 15)
TOTAL = "total"


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds (user + system) of each process at one instant, and the row each belongs to."""

    seconds: Mapping[int, float]
    rows: Mapping[int, str]


@dataclass(frozen=True)
class CostRow:
    """One process (or a service's helpers) over a window.

    ``cpu_us_per_step`` is CPU-µs per env step; ``cores`` the share of one core it used on average.
    """

    process: str
    cpu_s: float
    cores: float
    cpu_us_per_step: float

    @property
    def cores_per_100k(self) -> float:
        """Cores needed for 100k env steps/s at this cost (µs per step × 1e5 / 1e6)."""
        return self.cpu_us_per_step / 10.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (its own threads, not its reaped children)."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    return (int(fields[_UTIME]) + int(fields[_STIME])) / _TICKS_PER_S


def read_cpu(services: Mapping[str, int], supervisor: int | None = None) -> CpuReading:
    """CPU seconds of every process of ``services`` (name → PID of the process that leads its group).

    A service's own process is the row of its name; the other members of its group share the row
    ``"<name> children"`` (for the learner: its decode process, and multiprocessing's resource tracker).
    ``supervisor`` (the ``impala local`` process) is the row ``"impala local"``.
    """
    rows: dict[int, str] = {}
    for name, leader in services.items():
        rows[leader] = name
        for pid in group_members(leader):
            rows.setdefault(pid, f"{name} children")
    if supervisor is not None:
        rows.setdefault(supervisor, "impala local")
    seconds = {pid: s for pid in rows if (s := cpu_seconds(pid)) is not None}
    return CpuReading(seconds, {pid: rows[pid] for pid in seconds})


def cost_table(before: CpuReading, after: CpuReading, wall_s: float, env_steps: int) -> list[CostRow]:
    """Rows in the order ``after`` lists them, then ``TOTAL``. A process that started inside the window
    counts from zero; one that ended inside it is missing (its last ticks are lost)."""
    if wall_s <= 0 or env_steps <= 0:
        raise ValueError(f"need a window with time and env steps, got {wall_s} s and {env_steps} steps")
    spent: dict[str, float] = {}
    for pid, seconds in after.seconds.items():
        row = after.rows[pid]
        spent[row] = spent.get(row, 0.0) + max(0.0, seconds - before.seconds.get(pid, 0.0))
    spent[TOTAL] = sum(spent.values())
    return [CostRow(row, s, s / wall_s, s * 1e6 / env_steps) for row, s in spent.items()]


def format_table(rows: list[CostRow], baseline_us: float | None = None) -> str:
    """A plain-text table (the benchmark prints it; docs/performance.md keeps it)."""
    lines = [f"{'process':<22} {'CPU s':>7} {'cores':>6} {'CPU-µs/step':>12} {'cores/100k steps/s':>19}"]
    for r in rows:
        lines.append(
            f"{r.process:<22} {r.cpu_s:7.2f} {r.cores:6.2f} {r.cpu_us_per_step:12.1f} {r.cores_per_100k:19.2f}"
        )
    if baseline_us is not None:
        lines.append(f"{'in-process trainer':<22} {'':>7} {'':>6} {baseline_us:12.1f} {baseline_us / 10.0:19.2f}")
    return "\n".join(lines)


def read_endpoint_pids(endpoints: Path) -> dict[str, int]:
    """Service name → PID from a run's ``endpoints.json``."""
    return {str(k): int(v) for k, v in json.loads(endpoints.read_text())["pids"].items()}
