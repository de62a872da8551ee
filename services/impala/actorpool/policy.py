"""The acting policy of one pool: a model, its version, and weight swaps between batches.

New weights arrive from any thread (``offer``); the inference thread swaps them in right before its
next forward pass, so a batch never mixes versions and every action is stamped with the version that
chose it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from impala.core.models import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActResult:
    action: npt.NDArray[np.int64]  # [N]
    logits: npt.NDArray[np.float32]  # [N, A]
    baseline: npt.NDArray[np.float32]  # [N]
    state: tuple[npt.NDArray[np.float32], ...]  # each [N, *state_shape]
    version: int


class PolicyHolder:
    """Owns the acting model. ``act`` runs on the inference thread only."""

    def __init__(self, model: Policy, *, version: int = 0, device: str = "cpu", seed: int = 0) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.version = version
        self._pending: tuple[int, dict[str, torch.Tensor]] | None = None
        self._lock = threading.Lock()
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.state_shapes = tuple(tuple(s.shape[1:]) for s in model.initial_state(1))

    def offer(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Queue new weights (latest wins); applied before the next forward pass."""
        with self._lock:
            if self._pending is None or version > self._pending[0]:
                self._pending = (version, state_dict)

    def _swap(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or pending[0] <= self.version:
            return False
        version, state_dict = pending
        self.model.load_state_dict(state_dict)
        self.version = version
        return True

    def initial_state(self, rows: int) -> tuple[npt.NDArray[np.float32], ...]:
        return tuple(s.numpy() for s in self.model.initial_state(rows))

    def act(
        self,
        obs: npt.NDArray[np.generic],
        done: npt.NDArray[np.bool_],
        state: tuple[npt.NDArray[np.float32], ...],
    ) -> tuple[ActResult, bool]:
        """One batched forward pass; returns the result and whether weights were swapped first."""
        swapped = self._swap()
        dev = self.device
        with torch.inference_mode():
            out = self.model.act(
                torch.from_numpy(obs).to(dev, non_blocking=True),
                torch.from_numpy(done).to(dev, non_blocking=True),
                tuple(torch.from_numpy(s).to(dev, non_blocking=True) for s in state),
                generator=self._generator,
            )
            result = ActResult(
                action=out.action.cpu().numpy(),
                logits=out.logits.float().cpu().numpy(),
                baseline=out.baseline.float().cpu().numpy(),
                state=tuple(s.float().cpu().numpy() for s in out.core_state),
                version=self.version,
            )
        return result, swapped
