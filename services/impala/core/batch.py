"""The learner's batch type and the collation of rollout records into it.

Layout (stated once for the whole learner): **time-major** ``[T, B, ...]``, T the unroll length,
B the number of rollouts. ``observation`` has T+1 steps: ``observation[t]`` precedes ``action[t]`` and
``observation[T]`` bootstraps. ``reward[t]``, ``terminated[t]``, ``truncated[t]`` and
``bootstrap_value[t]`` belong to the transition ``t -> t+1``. ``mask[t, b]`` is False on the padding of
a partial rollout; padded steps are zero and contribute nothing to any loss or gradient. Truncations
carry ``bootstrap_value[t] = V_actor(final observation)``, folded into the reward by the learner
(docs/adr/0003-truncation-bootstrap.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from impala.core.rollouts import RolloutRecord

TIME_FIELDS = (
    "observation",
    "action",
    "behaviour_logits",
    "behaviour_log_prob",
    "reward",
    "terminated",
    "truncated",
    "bootstrap_value",
    "mask",
    "policy_versions",
)
TENSOR_FIELDS = (*TIME_FIELDS, "length")  # every per-batch tensor except the recurrent state


@dataclass
class Batch:
    """B rollouts stacked time-major; see the module docstring for alignment."""

    observation: Tensor  # [T+1, B, *obs], uint8 or float32
    action: Tensor  # [T, B, *action_shape], int64 or float32 (box, unclipped)
    behaviour_logits: Tensor  # float32 [T, B, P], the behaviour policy's distribution parameters
    behaviour_log_prob: Tensor  # float32 [T, B], log μ(action)
    reward: Tensor  # float32 [T, B], unclipped
    terminated: Tensor  # bool [T, B]
    truncated: Tensor  # bool [T, B]
    bootstrap_value: Tensor  # float32 [T, B], V_actor(final obs) where truncated, else 0
    mask: Tensor  # bool [T, B], True for valid steps
    policy_versions: Tensor  # int64 [T, B]
    length: Tensor  # int64 [B], valid steps per rollout
    initial_core_state: tuple[Tensor, ...] = ()  # each [B, *state_shape]
    episode_returns: list[float] = field(default_factory=list)  # episodes that ended inside the batch
    episode_lengths: list[int] = field(default_factory=list)
    # Host staging buffers (pinned) and the event of their last copy; only used when the batch is on CUDA.
    _host: Batch | None = field(default=None, repr=False, compare=False)
    _copied: torch.cuda.Event | None = field(default=None, repr=False, compare=False)

    @property
    def num_steps(self) -> int:
        """Valid env steps in the batch (padding excluded)."""
        return int(self.length.sum())


def collate(records: Sequence[RolloutRecord], device: torch.device | str, out: Batch | None = None) -> Batch:
    """Stack ``records`` into a time-major Batch on ``device``, reusing ``out``'s buffers when they fit.

    On CUDA the records are written into pinned host buffers and copied with ``non_blocking=True``;
    the next collate into the same ``out`` waits for that copy before overwriting the host buffers.
    """
    device = torch.device(device)
    if out is None or not _fits(out, records, device):
        out = _allocate(records, device)
    host = out._host if out._host is not None else out
    if out._copied is not None:
        out._copied.synchronize()
    _fill(host, records)
    if host is not out:
        for name in TENSOR_FIELDS:
            getattr(out, name).copy_(getattr(host, name), non_blocking=True)
        for dst, src in zip(out.initial_core_state, host.initial_core_state, strict=True):
            dst.copy_(src, non_blocking=True)
        out._copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
        out._copied.record()
    out.episode_returns = host.episode_returns
    out.episode_lengths = host.episode_lengths
    return out


def _fill(host: Batch, records: Sequence[RolloutRecord]) -> None:
    for name in TIME_FIELDS:
        view = getattr(host, name).numpy()
        for b, rec in enumerate(records):
            view[:, b] = getattr(rec, name)
    host.length.numpy()[:] = [rec.length for rec in records]
    for i, state in enumerate(host.initial_core_state):
        view = state.numpy()
        for b, rec in enumerate(records):
            view[b] = rec.initial_core_state[i]
    host.episode_returns = [r for rec in records for r in rec.episode_returns]
    host.episode_lengths = [n for rec in records for n in rec.episode_lengths]


def _allocate(records: Sequence[RolloutRecord], device: torch.device) -> Batch:
    if not records:
        raise ValueError("collate needs at least one rollout")
    pin = device.type == "cuda"

    def empty(shape: tuple[int, ...], dtype: np.dtype[np.generic], on: torch.device) -> Tensor:
        return torch.empty(shape, dtype=_torch_dtype(dtype), device=on, pin_memory=pin and on.type == "cpu")

    def build(on: torch.device) -> Batch:
        first, size = records[0], len(records)
        time: dict[str, Any] = {
            name: empty(_stacked_shape(getattr(first, name), size), getattr(first, name).dtype, on)
            for name in TIME_FIELDS
        }
        states = tuple(empty((size, *s.shape), np.dtype(np.float32), on) for s in first.initial_core_state)
        return Batch(**time, length=empty((size,), np.dtype(np.int64), on), initial_core_state=states)

    out = build(device)
    if pin:
        out._host = build(torch.device("cpu"))
    return out


def _torch_dtype(dtype: np.dtype[np.generic]) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _stacked_shape(array: np.ndarray, size: int) -> tuple[int, ...]:
    return (array.shape[0], size, *array.shape[1:])


def _fits(out: Batch, records: Sequence[RolloutRecord], device: torch.device) -> bool:
    """Whether ``out`` has exactly the shapes, dtypes and device these records need."""
    here = out.length.device
    if device.type != here.type or device.index not in (None, here.index):
        return False
    if not records or out.length.shape[0] != len(records):
        return False
    first = records[0]
    for name in TIME_FIELDS:
        tensor, array = getattr(out, name), getattr(first, name)
        if tuple(tensor.shape) != _stacked_shape(array, len(records)) or tensor.dtype != _torch_dtype(array.dtype):
            return False
    return len(out.initial_core_state) == len(first.initial_core_state)
