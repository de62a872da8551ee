"""Benchmark registry, table and JSON output."""

from __future__ import annotations

import importlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from impala.core import heap


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


Bench = Callable[[float], list[Figure]]

# name -> "module:function"; each function takes the measuring time per figure in seconds.
BENCHES: dict[str, str] = {
    "ingress": "impala.tools.bench.ingress:bench_ingress",
    "buffer": "impala.tools.bench.buffer:bench_buffer",
    "learner": "impala.tools.bench.learner:bench_learner",
    "weights": "impala.tools.bench.weights:bench_weights",
    "e2e": "impala.tools.bench.e2e:bench_e2e",
}


def _load(spec: str) -> Bench:
    module, func = spec.split(":")
    bench: Bench = getattr(importlib.import_module(module), func)
    return bench


def _ranked(ranks: tuple[int, ...]) -> Bench:
    from impala.tools.bench.learner_ranks import bench_learner_ranks

    return lambda seconds: bench_learner_ranks(seconds, ranks)


def run_benchmarks(which: str, *, seconds: float, out: Path, ranks: tuple[int, ...] = ()) -> int:
    console = Console()
    # The services keep freed large blocks in their heap (impala.core.heap); so does the load generator
    # and every in-process baseline here, so both sides of a ratio run on the same allocator settings.
    heap.retain_freed_memory()
    names = list(BENCHES) if which == "all" else [which]
    figures: list[Figure] = []
    for name in names:
        console.print(f"[bold]bench {name}[/bold] …")
        started = time.monotonic()
        try:
            got = (_ranked(ranks) if ranks else _load(BENCHES[name]))(seconds)
        except Exception as err:  # one broken benchmark must not hide the others' figures
            console.print(f"[red]bench {name} failed: {err!r}[/red]")
            continue
        figures.extend(got)
        console.print(f"  done in {time.monotonic() - started:.1f}s")
    table = Table(title=f"impala bench ({platform.node()}, {time.strftime('%Y-%m-%d %H:%M')})")
    for column in ("name", "value", "unit", "baseline", "baseline value", "ratio"):
        table.add_column(column, justify="right" if "value" in column or column == "ratio" else "left")
    for f in figures:
        table.add_row(f.name, f"{f.value:,.1f}", f.unit, f.baseline_name, f"{f.baseline_value:,.1f}", f"{f.ratio:.2f}×")
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([f.as_dict() for f in figures], indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0 if len(figures) > 0 else 1
