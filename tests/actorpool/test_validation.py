"""StepChecker's fast path accepts and returns exactly what check_step does."""

from __future__ import annotations

import numpy as np
import pytest

from impala.actorpool.errors import StreamError
from impala.actorpool.v1 import actorpool_pb2
from impala.actorpool.validation import EnvSpec, StepChecker, check_step
from impala.core import tensors

E = 3


def make_step(obs: np.ndarray, reward: list[float], terminated: list[bool] | None = None) -> actorpool_pb2.Step:
    terminated = terminated or [False] * E
    return actorpool_pb2.Step(
        observation=tensors.encode(obs), reward=reward, terminated=terminated, truncated=[False] * E
    )


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
@pytest.mark.parametrize("ended", [False, True])
def test_fast_path_matches_check_step(dtype: str, ended: bool) -> None:
    spec = EnvSpec(np.dtype(dtype), (2,), 2)
    big = np.finfo(np.float64).max if dtype == "float64" else 7  # values whose sum overflows are still valid
    obs = np.full((E, 2), big, dtype=dtype)
    step = make_step(obs, [1.0, -2.0, 0.5], [ended, False, False])
    want = check_step(step, spec, E, first=False)
    got = StepChecker(spec, E).check(step, first=False)
    for field in ("observation", "reward", "terminated", "truncated", "ended"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert got.observation.dtype == want.observation.dtype
    assert (got.any_ended, got.any_truncated) == (want.any_ended, want.any_truncated) == (ended, False)


@pytest.mark.parametrize(
    ("obs_value", "reward", "reason"),
    [(np.nan, 0.0, "observation"), (np.inf, 0.0, "observation"), (0.0, float("-inf"), "reward")],
)
def test_fast_path_rejects_non_finite(obs_value: float, reward: float, reason: str) -> None:
    spec = EnvSpec(np.dtype("float32"), (2,), 2)
    obs = np.zeros((E, 2), dtype=np.float32)
    obs[1, 0] = obs_value
    with pytest.raises(StreamError) as err:
        StepChecker(spec, E).check(make_step(obs, [0.0, reward, 0.0]), first=False)
    assert err.value.reason == reason
