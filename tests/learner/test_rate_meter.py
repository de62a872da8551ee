"""The learner's env-steps rate is measured over a window, so slow updates do not read as 0 and bursts."""

from __future__ import annotations

import pytest

from impala.learner.progress import RateMeter


def test_a_learner_updating_every_6_s_reads_its_mean_rate_not_zeros_and_bursts() -> None:
    meter = RateMeter(window_s=10.0)
    rates = []
    for second in range(60):  # a report every second, 640 env steps at every 6th
        rates.append(meter.update(640 * (second // 6), now=float(second)))
    warm = rates[12:]
    assert min(warm) > 0, "no report in steady state reads 0"
    assert all(640 / 6 * 0.5 < rate < 640 / 6 * 1.5 for rate in warm), warm
    assert sum(warm) / len(warm) == pytest.approx(640 / 6, rel=0.1)


def test_a_steady_stream_reads_its_rate_and_follows_a_change() -> None:
    meter = RateMeter(window_s=10.0)
    for second in range(20):
        rate = meter.update(1000 * second, now=float(second))
    assert rate == pytest.approx(1000)
    for second in range(20, 40):  # the learner stops (paused): the rate reaches 0 within the window
        rate = meter.update(19_000, now=float(second))
    assert rate == 0
