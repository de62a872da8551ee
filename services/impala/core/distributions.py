"""The action distributions of the policy heads, one per action space, as functions of the head's
parameters ``params`` ``[..., P]`` (the ``logits`` a ``Policy`` outputs and a rollout records):

| space          | params                                   | distribution                             |
|----------------|------------------------------------------|------------------------------------------|
| discrete n     | logits ``[..., n]``                      | categorical                              |
| multi-discrete | the K heads' logits, concatenated        | K independent categoricals (log-probs add)|
| box, D values  | mean ``[..., D]`` then log-std ``[..., D]`` | diagonal Gaussian (unclipped samples)  |

Sampling takes the noise as an argument (drawn by the caller from its own seeded generator, and
traceable): standard Gumbel noise ``[..., P]`` for categorical heads (``argmax(logits + g)`` is a
categorical sample, the Gumbel-max trick), standard normal noise ``[..., D]`` for the Gaussian
(``mean + std · ε``). Zero noise gives the greedy action (argmax, or the mean). V-trace needs only
``log_prob``: it takes log π(a) − log μ(a).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from impala.core.env_spec import ActionSpace

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def noise_size(space: ActionSpace) -> int:
    """Width of the noise ``sample`` takes: P for categorical heads, D for the Gaussian."""
    return space.param_size // 2 if space.type == "box" else space.param_size


def noise_is_normal(space: ActionSpace) -> bool:
    """Whether ``sample`` wants standard normal noise (box) rather than standard Gumbel noise."""
    return space.type == "box"


def sample(space: ActionSpace, params: Tensor, noise: Tensor) -> Tensor:
    """Actions ``[..., *space.shape_per_env]`` from ``params`` ``[..., P]`` and ``noise`` (module docstring)."""
    if space.type == "discrete":
        return (params.float() + noise).argmax(-1)
    if space.type == "multi_discrete":
        heads = zip(_split(space, params.float()), _split(space, noise), strict=True)
        return torch.stack([(logits + g).argmax(-1) for logits, g in heads], -1)
    mean, log_std = params.float().chunk(2, -1)
    flat = mean + log_std.exp() * noise
    return flat.reshape(*flat.shape[:-1], *space.shape)


def log_prob(space: ActionSpace, params: Tensor, action: Tensor) -> Tensor:
    """log π(action) ``[...]`` for ``params`` ``[..., P]`` and ``action`` ``[..., *space.shape_per_env]``."""
    if space.type == "discrete":
        return F.log_softmax(params, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
    if space.type == "multi_discrete":
        per_head = [
            F.log_softmax(logits, -1).gather(-1, action[..., k : k + 1]).squeeze(-1)
            for k, logits in enumerate(_split(space, params))
        ]
        return torch.stack(per_head, -1).sum(-1)
    mean, log_std = params.chunk(2, -1)
    flat = action.reshape(*action.shape[: action.dim() - len(space.shape)], -1).to(mean.dtype)
    z = (flat - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - _HALF_LOG_2PI).sum(-1)


def entropy(space: ActionSpace, params: Tensor) -> Tensor:
    """The distribution's entropy ``[...]`` (for the Gaussian, of the unclipped sample)."""
    if space.type == "box":
        _, log_std = params.chunk(2, -1)
        return (log_std + 0.5 + _HALF_LOG_2PI).sum(-1)
    heads = _split(space, params) if space.type == "multi_discrete" else (params,)
    total = torch.zeros((), dtype=params.dtype, device=params.device)
    for logits in heads:
        log_p = F.log_softmax(logits, -1)
        total = total - (log_p.exp() * log_p).sum(-1)
    return total


def _split(space: ActionSpace, params: Tensor) -> tuple[Tensor, ...]:
    """The K heads' slices of ``params`` [..., sum(nvec)]."""
    return tuple(torch.split(params, list(space.nvec), -1))
