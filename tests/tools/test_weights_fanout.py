"""The fan-out benchmark runs end to end (a smoke test: no timing is asserted)."""

from __future__ import annotations

import pytest

from impala.tools.bench.weights_fanout import run


@pytest.mark.slow
def test_bench_produces_a_row_per_subscriber_count() -> None:
    rows = run(subscribers=(2,), size_bytes=300_000, rounds=1, statistic="min")
    assert [row["subscribers"] for row in rows] == [2]
    assert all(row[key] > 0 for row in rows for key in ("raw_s", "fanout_s", "publish_s", "chunked_s"))
