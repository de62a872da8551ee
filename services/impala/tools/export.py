"""``impala export``: a checkpoint's policy as a TorchScript file that runs with plain torch.

The file needs neither impala nor gymnasium: ``torch.jit.load("policy.pt")`` and call it.

Its signature is ``impala.core.tracing``'s: ``logits, value = policy(obs)`` for feed-forward models,
``logits, value, h, c = policy(obs, h, c)`` for LSTM models (start from zeros, zero an env's row when
its episode starts).

The ``impala.json`` extra file holds the model spec, the env id and the policy version:
``torch.jit.load(path, _extra_files={"impala.json": ""})``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from impala.core import tracing
from impala.core.checkpoints import load_checkpoint
from impala.core.errors import UserError
from impala.core.models import ModelSpec, Policy, build_model, spec_for_env

log = logging.getLogger(__name__)


def checkpoint_policy(path: Path) -> tuple[Policy, dict[str, Any]]:
    """The checkpoint's model with its weights loaded (eval mode) and the checkpoint's config."""
    payload = load_checkpoint(path)
    config: dict[str, Any] = dict(payload.get("config") or {})
    spec = _spec(payload, config)
    model = build_model(spec)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path}: the weights do not fit the model its config describes ({first})") from err
    model.eval()
    config.setdefault("policy_version", int(payload.get("policy_version", 0)))
    return model, config


def _spec(payload: dict[str, Any], config: dict[str, Any]) -> ModelSpec:
    """A stored spec when the checkpoint has one, else the spec the learner built from its settings."""
    for key in ("model_spec", "spec"):
        stored = payload.get(key)
        if isinstance(stored, dict):
            return ModelSpec.from_dict(stored)
        if isinstance(stored, ModelSpec):
            return stored
    if "env" not in config:
        raise UserError("the checkpoint has neither a model spec nor a config with 'env'; is it an impala checkpoint?")
    return spec_for_env(
        config["env"],
        model=config.get("model", "auto"),
        hidden_size=int(config.get("hidden_size", 64)),
        use_lstm=bool(config.get("use_lstm", False)),
    )


def export_policy(model: Policy, out: Path, metadata: dict[str, Any]) -> Path:
    """Trace ``model`` (batch size stays dynamic) and save it with ``impala.json`` metadata."""
    traced = tracing.trace(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks TorchScript deprecated
        extra = {"impala.json": json.dumps({**metadata, "spec": model.spec.to_dict()})}
        torch.jit.save(traced, str(out), _extra_files=extra)
    return out


def export_checkpoint(checkpoint: Path, out: Path) -> int:
    """``impala export``: write ``out``; 0 on success. ``UserError`` when the checkpoint cannot be used
    or ``out``'s directory does not exist (it is not created: a typo must not scatter files)."""
    from rich.console import Console

    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist; create it or pick another path")
    model, config = checkpoint_policy(checkpoint)
    metadata = {"env": config.get("env"), "policy_version": config.get("policy_version"), "source": str(checkpoint)}
    export_policy(model, out, metadata)
    signature = "logits, value, h, c = policy(obs, h, c)" if model.spec.use_lstm else "logits, value = policy(obs)"
    Console(soft_wrap=True).print(
        f"wrote {out} ({out.stat().st_size:,} bytes): torch.jit.load({str(out)!r}); {signature}"
    )
    return 0
