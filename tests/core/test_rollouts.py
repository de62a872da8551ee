from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from impala.core import tensors
from impala.core.rollouts import RolloutRecord, from_proto, to_proto
from impala.core.tensors import TensorError
from impala.rollout.v1 import rollout_pb2
from tests.support import categorical_log_prob

T, A = 6, 3


def make_record(length: int = T, obs_dtype: type = np.float32, state: bool = True) -> RolloutRecord:
    rng = np.random.default_rng(length)
    valid = np.arange(T) < length
    truncated = np.zeros(T, dtype=bool)
    bootstrap = np.zeros(T, dtype=np.float32)
    if length > 0:
        truncated[length - 1] = True
        bootstrap[length - 1] = 1.5
    return RolloutRecord(
        observation=(rng.random((T + 1, 2, 2)) * 255).astype(obs_dtype),
        action=(action := np.where(valid, rng.integers(0, A, T), 0).astype(np.int64)),
        behaviour_logits=(logits := (rng.normal(size=(T, A)) * valid[:, None]).astype(np.float32)),
        behaviour_log_prob=categorical_log_prob(logits, action),
        reward=(rng.normal(size=T) * valid).astype(np.float32),
        terminated=np.zeros(T, dtype=bool),
        truncated=truncated,
        bootstrap_value=bootstrap,
        mask=valid,
        policy_versions=np.where(valid, np.arange(7, 7 + T), 0).astype(np.int64),
        length=length,
        initial_core_state=(rng.normal(size=(5,)).astype(np.float32),) if state else (),
        episode_returns=[3.0, 4.5],
        episode_lengths=[3, 2],
        producer_id="pool-1",
        session_id="s-9",
        env_index=2,
    )


def round_trip(rec: RolloutRecord, **kwargs: int) -> RolloutRecord:
    return from_proto(rollout_pb2.Rollout.FromString(to_proto(rec).SerializeToString()), **kwargs)


@pytest.mark.parametrize(
    ("length", "obs_dtype", "state"), [(T, np.float32, True), (2, np.uint8, False), (0, np.uint8, True)]
)
def test_round_trip_keeps_every_field(length: int, obs_dtype: type, state: bool) -> None:
    rec = make_record(length, obs_dtype, state)
    back = round_trip(rec, unroll_length=T)
    for name in ("observation", "action", "behaviour_logits", "reward", "terminated", "truncated", "bootstrap_value"):
        got, want = getattr(back, name), getattr(rec, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(back.mask, rec.mask)
    np.testing.assert_array_equal(back.policy_versions, rec.policy_versions)
    assert len(back.initial_core_state) == len(rec.initial_core_state)
    for got_s, want_s in zip(back.initial_core_state, rec.initial_core_state, strict=True):
        np.testing.assert_array_equal(got_s, want_s)
    assert (back.length, back.episode_returns, back.episode_lengths) == (length, [3.0, 4.5], [3, 2])
    assert (back.producer_id, back.session_id, back.env_index) == ("pool-1", "s-9", 2)
    assert back.policy_version == (7 if length else 0)


def test_to_proto_stamps_creation_time_and_oldest_version() -> None:
    msg = to_proto(make_record(4))
    assert msg.created_unix_ns > 0
    assert msg.policy_version == 7


Mutation = Callable[[rollout_pb2.Rollout], object]


def _set(name: str, array: np.ndarray) -> Mutation:
    return lambda msg: tensors.encode(array, out=getattr(msg, name))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.ClearField("reward"), "reward is missing"),
        (_set("action", np.zeros(T, dtype=np.int32)), "action: dtype is int32"),
        (_set("reward", np.zeros(T + 1, dtype=np.float32)), "reward: shape"),
        (_set("behaviour_logits", np.zeros((T - 1, A), dtype=np.float32)), "behaviour_logits: shape"),
        (_set("behaviour_logits", np.zeros((T, 0), dtype=np.float32)), "at least one action"),
        (_set("observation", np.zeros((T, 2, 2), dtype=np.float32)), "observation: shape"),
        (_set("mask", np.arange(T) < 2), "mask: must be True exactly"),
        (lambda m: setattr(m, "length", T + 1), "exceeds the unroll length"),
        (_set("action", np.full(T, A, dtype=np.int64)), "action: values must lie in [0, 3)"),
        (_set("reward", np.array([0, 0, np.nan, 0, 0, 0], dtype=np.float32)), "reward: contains NaN"),
        (_set("bootstrap_value", np.full(T, np.inf, dtype=np.float32)), "bootstrap_value: contains NaN"),
        (lambda m: m.episode_lengths.append(1), "episode_returns has 2 entries but episode_lengths has 3"),
    ],
)
def test_invalid_rollouts_are_refused_with_the_field_named(mutate: Mutation, message: str) -> None:
    msg = to_proto(make_record())
    mutate(msg)
    with pytest.raises(TensorError, match=re.escape(message)):
        from_proto(msg)


def test_unroll_length_is_enforced() -> None:
    with pytest.raises(TensorError, match="action: shape is"):
        from_proto(to_proto(make_record()), unroll_length=T + 2)


def test_nan_in_float_observation_is_refused_but_uint8_is_not_checked() -> None:
    rec = make_record()
    rec.observation[1, 0, 0] = np.nan
    with pytest.raises(TensorError, match="observation: contains NaN"):
        round_trip(rec)
    assert round_trip(make_record(obs_dtype=np.uint8)).observation.dtype == np.uint8


def test_partial_rollout_must_end_cut() -> None:
    rec = make_record(3)
    assert round_trip(rec).length == 3
    rec.truncated[:] = False
    with pytest.raises(TensorError, match="must end terminated or truncated"):
        round_trip(rec)
    rec.terminated[2] = True
    assert round_trip(rec).terminated[2]
