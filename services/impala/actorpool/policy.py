"""The acting policy of one pool: a model, its version, and weight swaps between batches.

New weights arrive from any thread (``offer``); the acting thread swaps them in right before its
next forward pass, so a batch never mixes versions and every action is stamped with the version that
chose it. The forward pass and the sampling are one TorchScript trace (``impala.core.tracing.Acting``:
about half the time of the eager module for small models); it shares the model's parameters, so a
swap reaches it. A batch makes one call into torch and no other: every torch call lets go of the GIL,
and on a busy pool gRPC's poller thread takes it each time (ADR 0014). The sampling noise (Gumbel for
categorical heads, normal for the Gaussian) comes from a seeded numpy generator, which keeps the GIL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from impala.core import distributions, tracing
from impala.core.models import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActResult:
    action: npt.NDArray[Any]  # [N, *action_shape], int64 or float32 (box: the unclipped sample)
    logits: npt.NDArray[np.float32]  # [N, P], the action distribution's parameters
    log_prob: npt.NDArray[np.float32]  # [N], log μ(action)
    baseline: npt.NDArray[np.float32]  # [N]
    state: tuple[npt.NDArray[np.float32], ...]  # each [N, *state_shape]
    version: int


class NonFiniteOutputError(ArithmeticError):
    """The model's logits or values are NaN or infinite (diverged weights): no action is sampled
    from them, and no rollout records them."""


class PolicyHolder:
    """Owns the acting model. ``act`` runs on one thread only (the event loop's, or the inference thread)."""

    def __init__(self, model: Policy, *, version: int = 0, device: str = "cpu", seed: int = 0) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.version = version
        self._pending: tuple[int, dict[str, torch.Tensor]] | None = None
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self.state_shapes = tuple(tuple(s.shape[1:]) for s in model.initial_state(1))
        space = model.spec.actions
        self.noise_size = distributions.noise_size(space)
        self._normal_noise = distributions.noise_is_normal(space)
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
        size = (obs.shape[0], self.noise_size)
        draw = self._rng.standard_normal if self._normal_noise else self._rng.gumbel
        noise = draw(size=size).astype(np.float32)
        if self.device.type == "cpu":
            with torch.inference_mode():
                outputs = self._forward(torch.from_numpy(obs), torch.from_numpy(noise), *map(torch.from_numpy, state))
            logits, baseline, action, log_prob, *core_state = (t.numpy() for t in outputs)
        else:
            logits, baseline, action, log_prob, *core_state = self._on_device(obs, noise, state)
        if not (np.isfinite(logits).all() and np.isfinite(baseline).all()):
            # argmax over NaN still picks an index: say so instead of acting on garbage.
            bad = int((~np.isfinite(logits).all(axis=-1) | ~np.isfinite(baseline)).sum())
            raise NonFiniteOutputError(
                f"policy version {self.version} gave non-finite logits or values for {bad} of {len(baseline)} rows"
            )
        result = ActResult(
            action=action,
            logits=logits.astype(np.float32, copy=False),
            log_prob=log_prob.astype(np.float32, copy=False),
            baseline=baseline.astype(np.float32, copy=False),
            state=tuple(s.astype(np.float32, copy=False) for s in core_state),
            version=self.version,
        )
        return result, swapped

    def _on_device(
        self, obs: npt.NDArray[np.generic], noise: npt.NDArray[np.float32], state: tuple[npt.NDArray[np.float32], ...]
    ) -> list[npt.NDArray[Any]]:
        dev = self.device
        with torch.inference_mode():
            outputs = self._forward(
                *(torch.from_numpy(a).to(dev, non_blocking=True) for a in (obs, noise, *state)),
            )
            return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in outputs]


def _acting_forward(model: Policy, device: torch.device) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The traced acting pass (``tracing.Acting``), or the eager one when the tracer cannot follow the model."""
    try:
        with torch.inference_mode():
            traced: Callable[..., tuple[torch.Tensor, ...]] = tracing.trace_acting(model, device)
    except Exception:  # an exotic custom model: act eagerly, more slowly
        log.warning("the acting forward pass could not be traced; running it eagerly", exc_info=True)
        return tracing.Acting(model).eval()
    return traced
