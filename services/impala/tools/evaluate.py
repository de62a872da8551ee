"""``impala eval``: run a checkpoint's policy in its Gymnasium env and report mean ± std return.

Episodes run one after another in one env (seeds ``seed``, ``seed + 1``, ...), sampling actions from
the policy or, with ``greedy``, taking the most likely one. With ``video_dir`` every episode is
recorded by Gymnasium's ``RecordVideo`` (needs ``moviepy`` and an env that renders ``rgb_array``).
"""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any

import gymnasium as gym

from impala.core.env_spec import EnvSpecError, from_spaces, load_env_spec
from impala.core.envs import make_env
from impala.core.errors import UserError
from impala.core.evaluation import run_episodes
from impala.core.models import Policy
from impala.tools.export import checkpoint_policy


def video_problem(env_id: str) -> str | None:
    """Why videos of ``env_id`` cannot be recorded here, or None when they can."""
    if importlib.util.find_spec("moviepy") is None:
        return "recording videos needs moviepy: pip install moviepy"
    env = make_env(env_id)
    try:
        modes = env.metadata.get("render_modes", [])
    finally:
        env.close()
    if "rgb_array" not in modes:
        return f"{env_id} cannot render rgb_array frames (render modes: {modes}), so there is no video to record"
    return None


def make_eval_env(env_id: str, video_dir: Path | None) -> gym.Env[Any, Any]:
    if video_dir is None:
        return make_env(env_id)
    env = make_env(env_id, render_mode="rgb_array")
    return gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True)


def _mismatch(env: gym.Env[Any, Any], model: Policy) -> str | None:
    """Why ``model`` cannot act in ``env`` (observation or action space), or None."""
    try:
        spec = from_spaces(env.observation_space, env.action_space)
    except EnvSpecError as err:
        return str(err)
    want = model.spec.env_spec
    if (spec.observation_shape, spec.action) != (want.observation_shape, want.action):
        return f"the env has {spec.describe()}; the policy expects {want.describe()}"
    return None


def evaluate_checkpoint(
    checkpoint: Path,
    env_id: str | None,
    episodes: int,
    *,
    env_spec: Path | None = None,
    greedy: bool = False,
    seed: int = 0,
    video_dir: Path | None = None,
) -> int:
    """``impala eval``: print mean ± std return; 0 on success. ``UserError`` (exit code 2) for an
    unusable checkpoint, an unknown env id, an env the policy cannot act in, a video problem, an env
    spec that disagrees with the checkpoint, or a spec-only checkpoint without ``env_id``."""
    from rich.console import Console

    out = Console(soft_wrap=True)
    model, config = checkpoint_policy(checkpoint)
    try:
        declared = None if env_spec is None else load_env_spec(env_spec)
    except EnvSpecError as err:
        raise UserError(str(err)) from None
    if declared is not None and declared != model.spec.env_spec:
        raise UserError(
            f"--env-spec {env_spec} says {declared.describe()}; the checkpoint's policy has "
            f"{model.spec.env_spec.describe()}"
        )
    if env_id is None and config.get("env_spec"):
        # A spec-only run names no env to play; the trainer's default env id is not the run's env.
        raise UserError(
            f"{checkpoint} was trained from the env spec {config['env_spec']} ({model.spec.env_spec.describe()}); "
            "impala eval plays a Gymnasium env: pass --env ID"
        )
    env_id = env_id or str(config.get("env", "CartPole-v1"))  # default: the env the checkpoint was trained on
    if video_dir is not None and (problem := video_problem(env_id)) is not None:
        raise UserError(problem)
    env = make_eval_env(env_id, video_dir)
    try:
        if (mismatch := _mismatch(env, model)) is not None:
            raise UserError(f"{mismatch}: pass --env {config.get('env', '<the training env>')}")
        result = run_episodes(model, env, episodes, greedy=greedy, seed=seed)
    finally:
        env.close()
    mode = "greedy" if greedy else "sampled"
    out.print(
        f"{env_id}: mean return {result.mean:.2f} ± {result.std:.2f} over {episodes} episodes "
        f"({mode} actions, mean length {statistics.fmean(result.lengths):.1f})",
        highlight=False,
    )
    if video_dir is not None:
        out.print(f"videos in {video_dir}", highlight=False)
    return 0
