"""Environment construction shared by the env client, the in-process trainer and model specs.
Torch-free, so env clients stay small."""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from impala.core.errors import UserError


def check_env_id(env_id: str) -> None:
    """Raise ``UserError`` unless ``env_id`` is a registered Gymnasium id (cheap: builds nothing)."""
    if env_id.startswith("ALE/"):
        try:
            # Optional dependency (extra "atari"), imported only here so CartPole users never need it.
            gym.register_envs(importlib.import_module("ale_py"))
        except ImportError:
            raise UserError(f"{env_id} needs the Atari extra: pip install 'impala-rl[atari]'") from None
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise UserError(
            f"unknown env id {env_id!r} ({err}); pass a registered Gymnasium id such as CartPole-v1"
        ) from None


def make_env(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """``gym.make``, plus the standard Atari preprocessing for ``ALE/*`` ids (uint8 ``[4, 84, 84]``);
    ``UserError`` for an unknown id."""
    check_env_id(env_id)
    if not env_id.startswith("ALE/"):
        return gym.make(env_id, **kwargs)
    # frameskip=1 in the raw env because AtariPreprocessing does the skipping (with max-pooling).
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, noop_max=30)
    return gym.wrappers.FrameStackObservation(env, 4)
