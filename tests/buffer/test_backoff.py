"""Capped exponential backoff with full jitter (impala.core.backoff)."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from impala.core.backoff import Backoff


def test_delays_are_jittered_below_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(7))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    backoff.reset()
    assert backoff.ceiling() == pytest.approx(0.1)


def test_ceiling_survives_days_of_failures() -> None:
    backoff = Backoff(base_s=0.05, cap_s=5.0, failures=10_000)
    assert backoff.ceiling() == 5.0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=2.0, cap_s=1.0)


def test_sleep_returns_early_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert Backoff(base_s=60.0, cap_s=60.0).sleep(stop) is True
    assert Backoff(base_s=0.001, cap_s=0.001).sleep(threading.Event()) is False


async def test_async_sleep_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await Backoff(base_s=60.0, cap_s=60.0, rng=random.Random(0)).sleep_async(stop) is True  # draws ~50 s
    assert await Backoff(base_s=0.001, cap_s=0.001).sleep_async(asyncio.Event()) is False
