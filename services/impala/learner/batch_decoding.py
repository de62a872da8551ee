"""Decoding buffer entries straight into the columns of a learner batch, checked a field at a time.

``rollout_decoder`` (``impala.learner.decoding``) decodes and checks one rollout with ~15 numpy calls;
for CartPole-size rollouts that per-call overhead is most of a learner's ingest time. Here the learner
knows every field's exact dtype, shape and byte size (T, A and the observation spec are fixed), so per
entry only the wire headers are compared and the bytes of each field are gathered; the value checks
(mask, action range, finiteness, how a partial rollout ends) then run once per field over all the new
columns. ``rollout_decoder`` stays the arbiter: an entry the fast path refuses is decoded by it, which
either names the problem (the entry is dropped as corrupt) or accepts it (it is written from the record).
So both paths accept exactly the same entries (tests/learner/test_batch_decoding.py checks this on
every kind of corruption).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from impala.core import tensors
from impala.core.batch import TIME_FIELDS, Batch
from impala.core.models import ModelSpec
from impala.core.rollouts import RolloutRecord
from impala.core.tensors import TensorError
from impala.learner.decoding import blank_record, rollout_decoder, valid_actions
from impala.rollout.v1 import rollout_pb2
from impala.tensor.v1 import tensor_pb2

_FLOATS = ("behaviour_logits", "behaviour_log_prob", "reward", "bootstrap_value")


@dataclass
class Column:
    """What the loop needs of one accepted rollout besides its tensors."""

    length: int
    policy_version: int  # oldest acting version (0 when empty)
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


@dataclass
class Refused:
    """An entry that cannot be learned from: ``reason`` is ``corrupt`` or ``stale``. A stale rollout's
    episodes still happened: they are counted, though its steps are not learned from."""

    reason: str
    error: str = ""
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Field:
    name: str
    wire: int
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    nbytes: int


class BatchDecoder:
    """Writes serialized rollouts into chosen columns of a ``[T, B]`` batch of ``spec``'s shapes.

    Args:
        spec: the learner's model (observation spec, number of actions, recurrent state).
        unroll_length: T.
    """

    def __init__(self, spec: ModelSpec, unroll_length: int) -> None:
        T, self.unroll_length, self.action_space = unroll_length, unroll_length, spec.actions
        self.float_observation = np.issubdtype(np.dtype(spec.observation_dtype), np.floating)
        blank = blank_record(spec, unroll_length)  # the one place the accepted shapes and dtypes are written
        self.fields = tuple(
            _field(name, getattr(blank, name).shape, getattr(blank, name).dtype) for name in TIME_FIELDS
        )
        self.states = tuple(_field(f"state{i}", s.shape, s.dtype) for i, s in enumerate(blank.initial_core_state))
        self._arbiter = rollout_decoder(spec, unroll_length)
        self._steps = np.arange(T)[None, :]

    def decode_into(
        self,
        out: Batch,
        columns: Sequence[int],
        payloads: Sequence[bytes],
        *,
        is_stale: Callable[[int], bool] = lambda version: False,
    ) -> list[Column | Refused]:
        """Decode ``payloads[i]`` into column ``columns[i]`` of ``out``; one result per payload.

        A refused entry's column holds garbage: the caller fills it again.
        """
        if len(columns) != len(payloads):
            raise ValueError(f"{len(columns)} columns for {len(payloads)} payloads")
        results: list[Column | Refused | None] = [None] * len(payloads)
        fast: list[int] = []  # indices into payloads that passed the header checks
        gathered: list[list[bytes]] = []
        messages: list[rollout_pb2.Rollout] = []
        for i, payload in enumerate(payloads):
            try:
                msg = rollout_pb2.Rollout.FromString(payload)
            except DecodeError as err:
                results[i] = Refused("corrupt", f"not a Rollout message: {err}")
                continue
            data = self._gather(msg)
            if data is None:
                results[i] = self._arbitrate(out, columns[i], payload)
            else:
                fast.append(i)
                gathered.append(data)
                messages.append(msg)
        if fast:
            stacked = self._stack(gathered)
            lengths = np.array([msg.length for msg in messages], dtype=np.int64)
            targets = [columns[i] for i in fast]
            self._write(out, targets, stacked, lengths)
            versions = _oldest_versions(stacked["policy_versions"], stacked["mask"])
            checks = zip(fast, messages, targets, versions, self._check(stacked, lengths), strict=True)
            for i, msg, column, version, ok in checks:
                results[i] = _column(msg, version) if ok else self._arbitrate(out, column, payloads[i])
        done: list[Column | Refused] = []
        for result in results:
            assert result is not None  # every index was decided above
            if isinstance(result, Column) and is_stale(result.policy_version):
                result = Refused("stale", "", result.episode_returns, result.episode_lengths)
            done.append(result)
        return done

    def _gather(self, msg: rollout_pb2.Rollout) -> list[bytes] | None:
        """Each field's bytes when every header is exactly what the model needs, else None."""
        if msg.length > self.unroll_length or len(msg.episode_returns) != len(msg.episode_lengths):
            return None
        out: list[bytes] = []
        for f in self.fields:
            # An unset field reads as an empty Tensor of dtype UNSPECIFIED: _checked refuses it.
            if (data := _checked(getattr(msg, f.name), f)) is None:
                return None
            out.append(data)
        if len(msg.initial_core_state) != len(self.states):
            return None
        for tensor, f in zip(msg.initial_core_state, self.states, strict=True):
            if (data := _checked(tensor, f)) is None:
                return None
            out.append(data)
        return out

    def _stack(self, gathered: list[list[bytes]]) -> dict[str, npt.NDArray[Any]]:
        """Each field of the new entries as one ``[k, *shape]`` array (one copy of the bytes)."""
        k, stacked = len(gathered), {}
        for j, f in enumerate((*self.fields, *self.states)):
            stacked[f.name] = np.frombuffer(b"".join(data[j] for data in gathered), dtype=f.dtype).reshape(k, *f.shape)
        return stacked

    def _write(
        self,
        out: Batch,
        columns: list[int],
        stacked: dict[str, npt.NDArray[Any]],
        lengths: npt.NDArray[np.int64],
    ) -> None:
        """Write the stacked fields into their columns of ``out`` (time-major)."""
        where: slice | list[int] = columns
        if columns == list(range(columns[0], columns[0] + len(columns))):
            where = slice(columns[0], columns[0] + len(columns))  # the usual case: a plain copy, no gather
        for f in self.fields:
            getattr(out, f.name).numpy()[:, where] = stacked[f.name].swapaxes(0, 1)
        for i, state in enumerate(out.initial_core_state):
            state.numpy()[where] = stacked[f"state{i}"]
        out.length.numpy()[where] = lengths

    def _check(self, stacked: dict[str, npt.NDArray[Any]], lengths: npt.NDArray[np.int64]) -> list[bool]:
        """The value checks of ``from_proto`` over all new entries at once; True where all pass."""
        k = len(lengths)
        mask, action = stacked["mask"], stacked["action"]  # [k, T], [k, T, *action_shape]
        ok = ~(mask != (self._steps < lengths[:, None])).any(axis=1)
        ok &= ~(~valid_actions(self.action_space, action) & mask).any(axis=1)
        floats = [*_FLOATS, *(f.name for f in self.states)]
        if self.float_observation:
            floats.append("observation")
        for name in floats:
            ok &= np.isfinite(stacked[name].reshape(k, -1)).all(axis=1)
        partial = (lengths > 0) & (lengths < self.unroll_length)
        if partial.any():
            rows, last = np.arange(k), np.clip(lengths - 1, 0, None)
            ends = stacked["terminated"][rows, last] | stacked["truncated"][rows, last]
            ok &= ~partial | ends
        return [bool(x) for x in ok]

    def _arbitrate(self, out: Batch, column: int, payload: bytes) -> Column | Refused:
        """The full per-record decoder decides an entry the fast path could not take."""
        try:
            record = self._arbiter(payload)
        except (TensorError, DecodeError) as err:
            return Refused("corrupt", str(err))
        _write_record(out, column, record)
        return Column(record.length, record.policy_version, list(record.episode_returns), list(record.episode_lengths))


def _field(name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> _Field:
    np_dtype = np.dtype(dtype)
    return _Field(name, tensors.wire_dtype(np_dtype), shape, np_dtype, int(np.prod(shape)) * np_dtype.itemsize)


def _checked(tensor: tensor_pb2.Tensor, f: _Field) -> bytes | None:
    if tensor.dtype != f.wire or tuple(tensor.shape) != f.shape:
        return None
    data = tensor.data  # read once: with upb every access of a bytes field copies it
    return data if len(data) == f.nbytes else None


def _column(msg: rollout_pb2.Rollout, policy_version: int) -> Column:
    return Column(int(msg.length), policy_version, list(msg.episode_returns), list(msg.episode_lengths))


def _oldest_versions(versions: npt.NDArray[Any], mask: npt.NDArray[Any]) -> list[int]:
    """Per entry the oldest version that acted on a valid step (0 for an empty rollout)."""
    oldest = np.where(mask, versions, np.iinfo(np.int64).max).min(axis=1)
    return [int(v) for v in np.where(mask.any(axis=1), oldest, 0)]


def _write_record(out: Batch, column: int, record: RolloutRecord) -> None:
    for name in TIME_FIELDS:
        getattr(out, name).numpy()[:, column] = getattr(record, name)
    out.length.numpy()[column] = record.length
    for state, value in zip(out.initial_core_state, record.initial_core_state, strict=True):
        state.numpy()[column] = value
