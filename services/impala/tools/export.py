"""``impala export``: a checkpoint's policy as a TorchScript file that runs with plain torch.

The file needs neither impala nor gymnasium: ``torch.jit.load("policy.pt")`` and call it.

- feed-forward models: ``logits, value = policy(obs)`` with ``obs`` ``[B, *obs_shape]`` (float32, or
  uint8 for pixels: the scaling by 1/255 is inside), ``logits`` ``[B, A]``, ``value`` ``[B]``;
- LSTM models: ``logits, value, h, c = policy(obs, h, c)`` with ``h``, ``c`` ``[B, hidden]``; start
  from zeros and zero an env's row when its episode starts.

The ``impala.json`` extra file holds the model spec, the env id and the policy version:
``torch.jit.load(path, _extra_files={"impala.json": ""})``.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from impala.core.checkpoints import load_checkpoint
from impala.core.models import ModelSpec, Policy, build_model, spec_for_env

log = logging.getLogger(__name__)


def checkpoint_policy(path: Path) -> tuple[Policy, dict[str, Any]]:
    """The checkpoint's model with its weights loaded (eval mode) and the checkpoint's config."""
    payload = load_checkpoint(path)
    config: dict[str, Any] = dict(payload.get("config") or {})
    spec = _spec(payload, config)
    model = build_model(spec)
    model.load_state_dict(payload["model"])
    model.eval()
    config.setdefault("policy_version", int(payload.get("policy_version", 0)))
    return model, config


def _spec(payload: dict[str, Any], config: dict[str, Any]) -> ModelSpec:
    """A stored spec when the checkpoint has one, else the spec the learner built from its settings."""
    for key in ("model_spec", "spec"):
        stored = payload.get(key)
        if isinstance(stored, dict):
            return ModelSpec(**{**stored, "observation_shape": tuple(stored["observation_shape"])})
        if isinstance(stored, ModelSpec):
            return stored
    if "env" not in config:
        raise ValueError("checkpoint has neither a model spec nor a config with 'env'")
    return spec_for_env(
        config["env"],
        model=config.get("model", "auto"),
        hidden_size=int(config.get("hidden_size", 64)),
        use_lstm=bool(config.get("use_lstm", False)),
    )


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


def example_inputs(spec: ModelSpec, batch_size: int = 2) -> tuple[Tensor, ...]:
    """Inputs of the exported module's ``forward`` for ``spec``."""
    dtype = torch.uint8 if spec.observation_dtype == "uint8" else torch.float32
    obs = torch.zeros((batch_size, *spec.observation_shape), dtype=dtype)
    if not spec.use_lstm:
        return (obs,)
    return obs, torch.zeros(batch_size, spec.hidden_size), torch.zeros(batch_size, spec.hidden_size)


def export_policy(model: Policy, out: Path, metadata: dict[str, Any]) -> Path:
    """Trace ``model`` (batch size stays dynamic) and save it with ``impala.json`` metadata."""
    wrapper: nn.Module = RecurrentPolicy(model) if model.spec.use_lstm else FeedForwardPolicy(model)
    wrapper.eval()
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format libtorch (C++) and plain
        # torch load without the defining code, which is what an exported policy is for.
        warnings.simplefilter("ignore", DeprecationWarning)
        # nn.LSTM's input checks convert tensors to bools while tracing; they do not change the graph.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        traced = torch.jit.trace(wrapper, example_inputs(model.spec), check_trace=False)  # type: ignore[no-untyped-call]
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {"impala.json": json.dumps({**metadata, "spec": asdict(model.spec)})}
        torch.jit.save(traced, str(out), _extra_files=extra)
    return out


def export_checkpoint(checkpoint: Path, out: Path) -> int:
    """``impala export``: write ``out``; 0 on success, 1 when the checkpoint cannot be used."""
    from rich.console import Console

    try:
        model, config = checkpoint_policy(checkpoint)
    except (ValueError, KeyError, RuntimeError) as err:
        Console(stderr=True, soft_wrap=True).print(f"[red]cannot export {checkpoint}: {err}[/red]", highlight=False)
        return 1
    metadata = {"env": config.get("env"), "policy_version": config.get("policy_version"), "source": str(checkpoint)}
    export_policy(model, out, metadata)
    signature = "logits, value, h, c = policy(obs, h, c)" if model.spec.use_lstm else "logits, value = policy(obs)"
    Console(soft_wrap=True).print(
        f"wrote {out} ({out.stat().st_size:,} bytes): torch.jit.load({str(out)!r}); {signature}"
    )
    return 0
