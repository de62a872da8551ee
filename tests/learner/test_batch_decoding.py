"""The learner's batch decoder accepts exactly what the per-record decoder accepts, and writes the same
tensors as collating the decoded records, for every kind of corruption a producer could send."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from impala.core.batch import TENSOR_FIELDS, Batch, collate
from impala.core.models import ModelSpec
from impala.core.rollouts import RolloutRecord, to_proto
from impala.core.tensors import TensorError
from impala.learner.batch_decoding import BatchDecoder, Column, Refused
from impala.learner.decoding import blank_record, rollout_decoder
from impala.rollout.v1 import rollout_pb2
from impala.tensor.v1 import tensor_pb2
from tests.support import categorical_log_prob

T = 5
SPECS = {
    "mlp": ModelSpec((4,), "float32", 3, "mlp"),
    "lstm": ModelSpec((4,), "float32", 3, "mlp", hidden_size=6, use_lstm=True),
    "pixels": ModelSpec((2, 3, 3), "uint8", 4, "shallow"),
}
Mutation = Callable[[rollout_pb2.Rollout], None]


def record(spec: ModelSpec, seed: int, length: int = T) -> RolloutRecord:
    rng = np.random.default_rng(seed)
    valid = np.arange(T) < length
    terminated = np.zeros(T, dtype=bool)
    if 0 < length < T:
        terminated[length - 1] = True
    obs_shape = (T + 1, *spec.observation_shape)
    if spec.observation_dtype == "uint8":
        observation: np.ndarray = rng.integers(0, 256, obs_shape, dtype=np.uint8)
    else:
        observation = rng.normal(size=obs_shape).astype(np.float32)
    state = tuple(rng.normal(size=spec.hidden_size).astype(np.float32) for _ in range(2)) if spec.use_lstm else ()
    return RolloutRecord(
        observation=observation,
        action=(action := np.where(valid, rng.integers(0, spec.num_actions, T), 0).astype(np.int64)),
        behaviour_logits=(logits := rng.normal(size=(T, spec.num_actions)).astype(np.float32)),
        behaviour_log_prob=categorical_log_prob(logits, action),
        reward=(rng.normal(size=T) * valid).astype(np.float32),
        terminated=terminated,
        truncated=np.zeros(T, dtype=bool),
        bootstrap_value=np.zeros(T, dtype=np.float32),
        mask=valid,
        policy_versions=np.where(valid, seed + np.arange(T), 0).astype(np.int64),
        length=length,
        initial_core_state=state,
        episode_returns=[float(seed)] if length < T else [],
        episode_lengths=[seed + 1] if length < T else [],
    )


def payload(spec: ModelSpec, seed: int, length: int = T, mutate: Mutation | None = None) -> bytes:
    msg = to_proto(record(spec, seed, length))
    if mutate is not None:
        mutate(msg)
    return msg.SerializeToString()


def float_at(name: str, index: int, value: float) -> Mutation:
    def mutate(msg: rollout_pb2.Rollout) -> None:
        tensor = getattr(msg, name) if name != "state" else msg.initial_core_state[0]
        data = bytearray(tensor.data)
        data[4 * index : 4 * index + 4] = np.float32(value).tobytes()
        tensor.data = bytes(data)

    return mutate


def set_attr(path: str, value: object) -> Mutation:
    def mutate(msg: rollout_pb2.Rollout) -> None:
        *parents, last = path.split(".")
        target = msg
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, value)

    return mutate


def set_shape(name: str, shape: list[int]) -> Mutation:
    def mutate(msg: rollout_pb2.Rollout) -> None:
        tensor = getattr(msg, name)
        del tensor.shape[:]
        tensor.shape.extend(shape)

    return mutate


def action_at(index: int, value: int) -> Mutation:
    def mutate(msg: rollout_pb2.Rollout) -> None:
        data = bytearray(msg.action.data)
        data[8 * index : 8 * index + 8] = np.int64(value).tobytes()
        msg.action.data = bytes(data)

    return mutate


def bool_at(name: str, index: int, value: bool) -> Mutation:
    def mutate(msg: rollout_pb2.Rollout) -> None:
        data = bytearray(getattr(msg, name).data)
        data[index] = int(value)
        getattr(msg, name).data = bytes(data)

    return mutate


def drop_state(msg: rollout_pb2.Rollout) -> None:
    del msg.initial_core_state[-1]


def extra_state(msg: rollout_pb2.Rollout) -> None:
    msg.initial_core_state.add().CopyFrom(msg.reward)


def mismatched_episodes(msg: rollout_pb2.Rollout) -> None:
    msg.episode_returns.append(1.0)


MUTATIONS: dict[str, Mutation] = {
    "nan logits": float_at("behaviour_logits", 2, float("nan")),
    "inf reward": float_at("reward", 1, float("inf")),
    "nan reward in padding": float_at("reward", T - 1, float("nan")),
    "nan bootstrap": float_at("bootstrap_value", 0, float("nan")),
    "nan observation": float_at("observation", 3, float("nan")),
    "nan state": float_at("state", 1, float("nan")),
    "action too large": action_at(0, 99),
    "negative action": action_at(1, -1),
    "action out of range in padding": action_at(T - 1, 99),
    "mask hole": bool_at("mask", 1, False),
    "mask beyond length": bool_at("mask", T - 1, True),
    "length above T": set_attr("length", T + 1),
    "partial without an end": bool_at("terminated", 2, False),
    "partial ending truncated": bool_at("truncated", 2, True),
    "reward dtype": set_attr("reward.dtype", tensor_pb2.DTYPE_FLOAT64),
    "unknown dtype": set_attr("mask.dtype", 99),
    "action shape": set_shape("action", [T + 1]),
    "observation shape": set_shape("observation", [T + 1, 2, 2]),
    "negative dimension": set_shape("reward", [-T]),
    "short data": set_attr("policy_versions.data", b"\x00" * 8),
    "missing field": lambda msg: msg.ClearField("truncated"),
    "episode counts differ": mismatched_episodes,
    "state missing": drop_state,
    "state extra": extra_state,
}


def slow_accepts(decode: Callable[[bytes], RolloutRecord], data: bytes) -> RolloutRecord | None:
    try:
        return decode(data)
    except (TensorError, DecodeError):
        return None


def assert_columns_equal(batch: Batch, want: Batch, columns: list[int], sources: list[int]) -> None:
    for name in TENSOR_FIELDS:
        got, expected = getattr(batch, name).numpy(), getattr(want, name).numpy()
        axis_got = got[columns] if name == "length" else got[:, columns]
        axis_want = expected[sources] if name == "length" else expected[:, sources]
        np.testing.assert_array_equal(axis_got, axis_want, err_msg=name)
    for got_state, want_state in zip(batch.initial_core_state, want.initial_core_state, strict=True):
        np.testing.assert_array_equal(got_state.numpy()[columns], want_state.numpy()[sources])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_valid_batches_equal_collated_records(kind: str) -> None:
    spec = SPECS[kind]
    payloads = [payload(spec, seed, length) for seed, length in enumerate([T, 3, 0, T])]
    decode = rollout_decoder(spec, T)
    want = collate([decode(p) for p in payloads], "cpu")
    out = collate([blank_record(spec, T)] * 4, "cpu")
    results = BatchDecoder(spec, T).decode_into(out, [0, 1, 2, 3], payloads)
    assert all(isinstance(r, Column) for r in results)
    assert_columns_equal(out, want, [0, 1, 2, 3], [0, 1, 2, 3])
    assert [r.length for r in results if isinstance(r, Column)] == [T, 3, 0, T]
    assert [r.policy_version for r in results if isinstance(r, Column)] == [0, 1, 0, 3]
    assert [r.episode_returns for r in results if isinstance(r, Column)] == [[], [1.0], [2.0], []]


STATE_MUTATIONS = {"nan state", "state missing"}  # need a recurrent state to corrupt
CASES = [(k, m) for k in sorted(SPECS) for m in sorted(MUTATIONS) if SPECS[k].use_lstm or m not in STATE_MUTATIONS]


@pytest.mark.parametrize(("kind", "mutation"), CASES)
def test_accepts_exactly_what_the_record_decoder_accepts(kind: str, mutation: str) -> None:
    spec = SPECS[kind]
    decode = rollout_decoder(spec, T)
    bad = payload(spec, 7, length=3, mutate=MUTATIONS[mutation])
    payloads = [payload(spec, 1), bad, payload(spec, 2, length=2)]
    out = collate([blank_record(spec, T)] * 3, "cpu")
    results = BatchDecoder(spec, T).decode_into(out, [2, 0, 1], payloads)
    records = [slow_accepts(decode, p) for p in payloads]
    assert [isinstance(r, Column) for r in results] == [r is not None for r in records], mutation
    if isinstance(results[1], Refused):
        assert results[1].reason == "corrupt" and results[1].error
    accepted = [i for i, r in enumerate(records) if r is not None]
    want = collate([r for r in records if r is not None], "cpu")
    assert_columns_equal(out, want, [[2, 0, 1][i] for i in accepted], list(range(len(accepted))))


def test_garbage_is_corrupt_and_stale_is_reported_by_version() -> None:
    spec = SPECS["mlp"]
    out = collate([blank_record(spec, T)] * 3, "cpu")
    payloads = [b"\xff\xfe not a rollout", payload(spec, 10), payload(spec, 2)]
    results = BatchDecoder(spec, T).decode_into(out, [0, 1, 2], payloads, is_stale=lambda version: version < 5)
    assert isinstance(results[0], Refused) and results[0].reason == "corrupt"
    assert isinstance(results[1], Column) and results[1].policy_version == 10
    assert isinstance(results[2], Refused) and results[2].reason == "stale"
