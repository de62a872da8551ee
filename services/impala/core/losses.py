"""The three IMPALA loss terms, time-major ``[T, B]``, each with a ``mask`` ``[T, B]`` (False on padding).

Reduction is a **sum** over valid steps, as in torchbeast and the original scalable_agent, not a mean.
Why: with a sum every valid step carries the same weight whatever the padding, so a partial rollout
(L < T valid steps) gives exactly the gradient of the unpadded length-L rollout, and B, T and the
number of padded steps never rescale the step size behind the optimizer's back. The price is that the
gradient grows with T·B, which is why the default RMSprop learning rate (4.8e-4) and grad-norm clip (40)
are torchbeast's values for sum-reduced losses at T=80, B=8; retune them when T·B changes a lot.

Masked steps go through ``torch.where`` (not a multiply), and the detached advantages and targets are
zeroed on padding before use, so even a non-finite value there cannot leak into a loss or a gradient
(0 · inf = NaN); padded steps get a gradient of exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor


def policy_gradient_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Σ_valid −log π(a_t|x_t) · A_t; ``log_probs`` (``impala.core.distributions.log_prob`` of the
    actions taken, any action space) and ``advantages`` [T, B].

    ``advantages`` are treated as constants (detached): only the log-probabilities get gradients.
    """
    return _masked_sum(-log_probs * _zero_padding(advantages.detach(), mask), mask)


def baseline_loss(values: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Σ_valid ½ (v_t − V(x_t))²; ``targets`` (the V-trace v_t) are detached. Scale by the baseline cost."""
    return _masked_sum(0.5 * (_zero_padding(targets.detach(), mask) - values) ** 2, mask)


def entropy_loss(entropy: Tensor, mask: Tensor) -> Tensor:
    """Σ_valid −H(π(·|x_t)), the negative entropy (``impala.core.distributions.entropy``, [T, B]):
    minimising it keeps the policy exploring."""
    return _masked_sum(-entropy, mask)


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x))


def _masked_sum(per_step: Tensor, mask: Tensor) -> Tensor:
    return _zero_padding(per_step, mask).sum()
