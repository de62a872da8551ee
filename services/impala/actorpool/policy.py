"""The acting policy of one pool: a model, its version, and weight swaps between batches.

New weights arrive from any thread (``offer``); the acting thread swaps them in right before its
next forward pass, so a batch never mixes versions and every action is stamped with the version that
chose it. The forward pass is the model's TorchScript trace (``impala.core.tracing``: about half the
time of the eager module for small models, and the GIL taken once per pass); it shares the model's
parameters, so a swap reaches it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from impala.core import tracing
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
    """Owns the acting model. ``act`` runs on one thread only (the event loop's, or the inference thread)."""

    def __init__(self, model: Policy, *, version: int = 0, device: str = "cpu", seed: int = 0) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.version = version
        self._pending: tuple[int, dict[str, torch.Tensor]] | None = None
        self._lock = threading.Lock()
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.state_shapes = tuple(tuple(s.shape[1:]) for s in model.initial_state(1))
        self._forward = _acting_forward(self.model, self.device)

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
        if state and done.any():  # episodes (re)start: zero state, as ``Policy.act`` does
            keep = ~done.reshape(-1, 1)
            state = tuple(np.where(keep, s, np.float32(0.0)) for s in state)
        dev = self.device
        with torch.inference_mode():
            logits, baseline, *core_state = self._forward(
                torch.from_numpy(obs).to(dev, non_blocking=True),
                *(torch.from_numpy(s).to(dev, non_blocking=True) for s in state),
            )
            # Sampled as ``Policy.act`` samples, with the pool's generator.
            action = torch.multinomial(F.softmax(logits.float(), -1), 1, generator=self._generator).squeeze(-1)
            result = ActResult(
                action=action.cpu().numpy(),
                logits=logits.float().cpu().numpy(),
                baseline=baseline.float().cpu().numpy(),
                state=tuple(s.float().cpu().numpy() for s in core_state),
                version=self.version,
            )
        return result, swapped


def _acting_forward(model: Policy, device: torch.device) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The traced one-step forward pass, or the eager one when the tracer cannot follow the model."""
    try:
        with torch.inference_mode():
            traced: Callable[..., tuple[torch.Tensor, ...]] = tracing.trace(model, device)
    except Exception:  # an exotic custom model: act eagerly, more slowly
        log.warning("the acting forward pass could not be traced; running it eagerly", exc_info=True)
        return tracing.one_step(model)
    return traced
