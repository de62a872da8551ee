"""A policy's one-step forward pass as a TorchScript trace: what ``impala export`` writes to a file and
what the ActorPool acts with (one call runs every op in C++ and holds the GIL once instead of once per
op; CartPole MLP at B=8: 68 → 36 µs).

- feed-forward models: ``logits, value = traced(obs)`` with ``obs`` ``[B, *obs_shape]`` (the spec's
  dtype; uint8 pixels are scaled by 1/255 inside), ``logits`` ``[B, P]`` the action distribution's
  parameters (``impala.core.distributions``: logits, or a Gaussian's mean then log-std), ``value`` ``[B]``;
- LSTM models: ``logits, value, h, c = traced(obs, h, c)`` with ``h``, ``c`` ``[B, hidden]``; the caller
  zeroes an env's row when its episode starts.

The batch size stays dynamic, and the trace shares the model's parameters: ``load_state_dict`` on the
model reaches it.

``trace_acting`` traces the same pass with the action sampled inside (``Acting``), for the ActorPool:
one call into TorchScript per batch, so the acting thread lets go of the GIL once per batch instead of
once per op (ADR 0014).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from impala.core import distributions
from impala.core.models import ModelSpec, Policy


class FeedForwardPolicy(nn.Module):
    """``[B, *obs]`` → logits ``[B, A]``, value ``[B]``: the time-major model run for one step."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        done = torch.zeros(1, obs.shape[0], dtype=torch.bool, device=obs.device)
        out = self.policy(obs.unsqueeze(0), done)
        return out.logits[0], out.baseline[0]


class RecurrentPolicy(nn.Module):
    """``[B, *obs]``, ``h``, ``c`` → logits, value, next ``h``, ``c``; the caller resets state at episode starts."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        done = torch.zeros(1, obs.shape[0], dtype=torch.bool, device=obs.device)
        out = self.policy(obs.unsqueeze(0), done, (h, c))
        h_next, c_next = out.core_state
        return out.logits[0], out.baseline[0], h_next, c_next


class Acting(nn.Module):
    """The one-step pass plus sampling: ``obs``, ``noise``, *state → logits, value, action, log_prob, *state.

    ``action`` is ``distributions.sample`` of the policy head with the caller's noise (standard Gumbel
    for categorical heads, the Gumbel-max trick; standard normal for the Gaussian), distributed as the
    head's distribution, the one ``Policy.act`` samples from; the caller draws the noise (the pool, from
    its seeded numpy generator). All zeros gives the greedy action. ``log_prob`` is log π(action), of the
    unclipped sample for a box.
    """

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.step = one_step(policy)
        self.space = policy.spec.actions

    def forward(self, obs: Tensor, noise: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, value, *next_state = self.step(obs, *state)
        action = distributions.sample(self.space, logits, noise)
        log_prob = distributions.log_prob(self.space, logits.float(), action)
        return (logits, value, action, log_prob, *next_state)


def one_step(model: Policy) -> nn.Module:
    """The eager module that ``trace`` traces (the same signature)."""
    wrapper: nn.Module = RecurrentPolicy(model) if model.spec.use_lstm else FeedForwardPolicy(model)
    return wrapper.eval()


def example_inputs(spec: ModelSpec, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
    """Inputs of the one-step module's ``forward`` for ``spec``."""
    zeros = np.zeros((batch_size, *spec.observation_shape), dtype=spec.observation_dtype)
    obs = torch.from_numpy(zeros).to(device)
    if not spec.use_lstm:
        return (obs,)
    return obs, *(torch.zeros(batch_size, spec.hidden_size, device=device) for _ in range(2))


def trace(model: Policy, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """``model``'s one-step forward pass traced on ``device`` (where the model is)."""
    return _trace(one_step(model), example_inputs(model.spec, device=device))


def trace_acting(model: Policy, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """``Acting(model)`` traced on ``device``: the one-step pass with the action sampled inside."""
    obs, *state = example_inputs(model.spec, device=device)
    noise = torch.zeros(obs.shape[0], distributions.noise_size(model.spec.actions), device=device)
    return _trace(Acting(model).eval(), (obs, noise, *state))


def _trace(module: nn.Module, inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format libtorch (C++) and plain
        # torch load without the defining code, and its executor is what makes acting cheap.
        warnings.simplefilter("ignore", DeprecationWarning)
        # nn.LSTM's input checks convert tensors to bools while tracing; they do not change the graph.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
            module, inputs, check_trace=False
        )
    return traced
