"""Helpers every test package uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

V = TypeVar("V")


def wait_for(
    probe: Callable[[], V],
    done: Callable[[V], bool] = bool,
    timeout_s: float = 30.0,
    *,
    what: str = "the condition",
    guard: Callable[[], None] | None = None,
    interval_s: float = 0.02,
) -> V:
    """Poll ``probe`` until ``done(value)`` holds and return that value; fail after ``timeout_s`` naming
    ``what`` and the last value. ``guard`` raises when the system under test died meanwhile, so a crash
    fails at once instead of at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if guard is not None:
            guard()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last value: {value!r}")
        time.sleep(interval_s)


def categorical_log_prob(logits: np.ndarray, action: np.ndarray) -> np.ndarray:
    """float32 log softmax(logits)[action] per step: a recorded behaviour log-probability that agrees
    with the recorded logits (``logits`` [T, A], ``action`` int [T])."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return np.take_along_axis(log_p, action.astype(np.int64)[:, None], -1)[:, 0].astype(np.float32)
