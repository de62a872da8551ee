"""The one resolver of a run's learning configuration: (env, preset, default, user overrides) → values.

Every entry point calls ``resolve`` (directly, or through ``impala.core.settings.with_presets``): the
in-process trainer, ``impala local``, ``impala learner``, ``impala actorpool`` and therefore the Helm
chart, whose rendered config sets only what a user overrides. Precedence, per field:

    a value the user gave (flag, ``IMPALA_*`` variable, chart value, argument)
    > the env's preset (an exact id, else the longest matching id prefix such as ``ALE/``)
    > the field's default (``LearnConfig`` / the settings classes, which a test keeps equal).

The defaults learn small control tasks (ADR 0016: Adam, losses averaged over valid steps, separate
critic for vector observations); presets hold the few overrides an env family needs, with the evidence
in its ADR. ``unroll_length`` is resolved here too, so a pool and a learner started for the same env
without flags agree on the wire's T.

Torch-free (plain data) so every service, the control API included, can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class Preset:
    """Overrides for one env (family): settings field name → value, plus the acting env slots."""

    name: str = "default"
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    num_envs: int = 8  # env slots acting for the in-process trainer (and ``impala local`` unless local_envs)
    # Env slots of ``impala local``'s env clients, when more than ``num_envs`` solve sooner there: a
    # client steps its envs in lockstep, one round trip per step for all of them (ADR 0027).
    local_envs: int | None = None


def _frozen(**values: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(values)


# CartPole-v1: the defaults learn it, but averaging 475 needs a near-deterministic policy: with entropy
# 0.01 one seed of three plateaued at 454 after 500k env steps, with 0.001 all three solved (ADR 0016).
# The shorter lr-decay horizon is ADR 0002's.
# ``impala local`` runs 64 CartPole envs in one client: 2-3x sooner to the target than 8 on 2 cores,
# with as few env steps (ADR 0027).
_CARTPOLE = Preset("CartPole-v1", _frozen(total_steps=1_000_000, entropy_cost=0.001), local_envs=64)

# Pendulum-v1 (continuous, Gaussian head): rewards in [-16.3, 0] must not be clipped to [-1, 1]; with
# the default clip 0.5 on the global gradient norm the critic's large gradients shrank the policy's steps
# to nothing (unsolved at 2M env steps for every seed), so the clip is torchbeast's 40. A short horizon
# (γ 0.9, as in rl-zoo's tuned Pendulum agents), normalized advantages and longer, larger batches
# reached −300 in 0.9M–1.25M env steps for seeds 0/1/2 (ADR 0026).
_PENDULUM = Preset(
    "Pendulum-v1",
    _frozen(
        reward_clipping="none",
        discounting=0.9,
        normalize_advantages=True,
        entropy_cost=0.0,
        unroll_length=20,
        batch_size=16,
        grad_norm_clipping=40.0,
        total_steps=2_000_000,
    ),
)

# LunarLander-v3: with the defaults (T 10, B 8, lr 1e-3 decaying over 50M) the return rises to ~80-125
# and falls back (−49 at 3M); a lower learning rate that decays over the 3M budget with longer, larger
# batches (T 20, B 32) kept more of it (105 at 3M, seed 0), and V-trace λ 0.95 cut the variance of the
# 1,000-step episodes' targets: seeds 0/1/2 at 3M 140 / 202 (solved at 2.12M) / 175, against 105 / 58 / —
# with λ 1. Unclipped rewards (Pendulum's recipe), γ 0.995, entropy 0.001, 128 hidden units or B 64 did
# not help (ADR 0028).
_LUNAR_LANDER = Preset(
    "LunarLander-v3",
    _frozen(learning_rate=3e-4, total_steps=3_000_000, unroll_length=20, batch_size=32, vtrace_lambda=0.95),
)

# ALE/*: torchbeast's Atari configuration (sum-reduced losses, RMSprop ε 0.01, T 80), the IMPALA paper's
# shallow network; ADR 0002 holds its provenance.
_TORCHBEAST_ATARI = Preset(
    "torchbeast-atari",
    _frozen(
        unroll_length=80,
        batch_size=8,
        learning_rate=4.8e-4,
        total_steps=50_000_000,
        entropy_cost=0.0006,
        baseline_cost=0.5,
        grad_norm_clipping=40.0,
        optimizer="rmsprop",
        rmsprop_alpha=0.99,
        rmsprop_epsilon=0.01,
        loss_reduction="sum",
        reward_clipping="abs_one",
    ),
)

PRESETS: MappingProxyType[str, Preset] = MappingProxyType(
    {
        "CartPole-v1": _CARTPOLE,
        "Pendulum-v1": _PENDULUM,
        "LunarLander-v3": _LUNAR_LANDER,
        "ALE/": _TORCHBEAST_ATARI,
    }
)

_DEFAULT = Preset()


def preset(env_id: str) -> Preset:
    """The preset for ``env_id``: an exact id, else the longest prefix ending in ``/``, else none
    (``module:Id`` is looked up as ``Id``)."""
    env_id = env_id.rpartition(":")[2]
    if env_id in PRESETS:
        return PRESETS[env_id]
    families = [key for key in PRESETS if key.endswith("/") and env_id.startswith(key)]
    return PRESETS[max(families, key=len)] if families else _DEFAULT


def resolve(env_id: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Effective values of the fields in ``defaults``: ``given`` > the env's preset > ``defaults``.

    Args:
        env_id: the run's environment id.
        given: the values the user set explicitly (only those).
        defaults: every field the caller owns, with its default; fields outside it are ignored.
    """
    chosen = preset(env_id).overrides
    return {name: given.get(name, chosen.get(name, default)) for name, default in defaults.items()}


def sources(env_id: str, given: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, str]:
    """Where each field's effective value comes from: ``"user"``, ``"preset:<name>"`` or ``"default"``."""
    chosen = preset(env_id)
    return {
        name: "user" if name in given else f"preset:{chosen.name}" if name in chosen.overrides else "default"
        for name in names
    }


_TARGET_RETURNS: MappingProxyType[str, float] = MappingProxyType({"CartPole-v1": 475.0, "CartPole-v0": 195.0})


def target_return(env_id: str) -> float | None:
    """Mean return over 100 episodes at which ``env_id`` counts as solved: Gymnasium's reward threshold.

    ``None`` when the env declares none (or is not registered): such runs have no target. A
    ``module:Id`` is looked up as ``Id`` (the module, imported by ``check_env_id``, registered it).
    """
    if env_id in _TARGET_RETURNS:
        return _TARGET_RETURNS[env_id]
    try:
        threshold = gym.spec(env_id.rpartition(":")[2]).reward_threshold
    except gym.error.Error:
        return None
    return None if threshold is None else float(threshold)
