"""``impala bench``: every figure is printed next to a bare baseline measured in the same run, as a
ratio, and written to ``bench/results/latest.json`` as ``{name, value, unit, baseline_name,
baseline_value, ratio}``. Benchmarks are never pass/fail tests."""

from __future__ import annotations

from impala.tools.bench.report import Figure, run_benchmarks

__all__ = ["Figure", "run_benchmarks"]
