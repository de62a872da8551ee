"""Per-environment overrides of the torchbeast defaults, where those are wrong, and target returns.

Torch-free (plain data) so any service can read it. The evidence behind each preset is in
docs/adr/0002-loss-reduction-and-presets.md; ``impala.core.inprocess`` reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Overrides for one env id: ``learn`` maps ``LearnConfig`` field names to values."""

    learn: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    model: str = "auto"
    hidden_size: int = 64
    use_lstm: bool = False
    num_envs: int = 8  # env slots acting for one learner (in-process envs or client envs)


# CartPole-v1: torchbeast's Atari defaults (T=80, lr 4.8e-4) learn it slowly (mean return 93 after 600k
# env steps). Short unrolls (many small updates) and a 6x larger step solve it in ~150k env steps
# (median of 6 seeds, ADR 0002). Its rewards are all +1, so reward clipping changes nothing.
_CARTPOLE = Preset(
    learn=MappingProxyType(
        {
            "unroll_length": 10,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "total_steps": 1_000_000,
            "entropy_cost": 0.001,
        }
    ),
    hidden_size=64,
    num_envs=8,
)

PRESETS: MappingProxyType[str, Preset] = MappingProxyType({"CartPole-v1": _CARTPOLE})

_TARGET_RETURNS: MappingProxyType[str, float] = MappingProxyType({"CartPole-v1": 475.0, "CartPole-v0": 195.0})


def preset(env_id: str) -> Preset:
    """The preset for ``env_id``; the torchbeast defaults (no overrides) for unknown ids."""
    return PRESETS.get(env_id, Preset())


def target_return(env_id: str) -> float | None:
    """Mean return over 100 episodes at which ``env_id`` counts as solved (Gymnasium's reward threshold)."""
    return _TARGET_RETURNS.get(env_id)
