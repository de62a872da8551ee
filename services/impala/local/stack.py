"""``impala local``: options and their resolution (presets, resume).

The stack itself (start, supervise, record, stop) lives in ``impala.local.session``; the command's
run and exit code in ``impala.local.main``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from impala.core import env_spec
from impala.core.envs import check_env_id
from impala.core.presets import preset, target_return
from impala.learner.settings import LearnerSettings
from impala.local.plan import default_envs_per_client
from impala.local.prometheus import prometheus_problem
from impala.local.recorder import tensorboard_problem
from impala.local.rundir import default_run_dir, read_config

DEFAULT_ENV = "CartPole-v1"


@dataclass(frozen=True)
class LocalOptions:
    """What ``impala local`` was asked to do (CLI options, before presets fill the gaps).

    ``env``/``envs_per_client``/``target_return`` left as None take the preset's values (the env
    defaults to CartPole-v1, or to the resumed run's env). Budgets of 0 mean none.
    ``max_env_steps`` counts the run's total env steps, so it carries across ``--resume``;
    ``max_seconds`` counts this session's wall clock.
    """

    env: str | None = None
    env_spec: Path | None = None  # the run's spaces from a file; without env, for foreign clients only
    use_lstm: bool | None = None  # model overrides of the preset (None: the preset's)
    hidden_size: int | None = None
    clients: int = 2
    envs_per_client: int | None = None
    pools: int = 1
    learners: int = 1
    target_return: float | None = None
    use_target: bool = True
    max_seconds: float = 0.0
    max_env_steps: int = 0
    run_dir: Path | None = None
    seed: int = 0
    resume: Path | None = None
    tensorboard: bool = False
    prometheus: bool = False
    prometheus_interval_s: float = 5.0
    live: bool = True
    startup_timeout_s: float = 180.0
    # Hyperparameters the user set (flags, --config), per service: {"learner": {...}, "actorpool": {...}}.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """Options with every gap filled: what the session runs."""

    options: LocalOptions
    env: str  # the Gymnasium id, or "" for a spec-only run (no Python env clients)
    envs_per_client: int
    target: float | None
    run_dir: Path
    saved: dict[str, Any] | None  # the resumed run's config.json services section

    def summary(self) -> dict[str, Any]:
        """The ``local`` section of ``config.json``."""
        doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.options).items()}
        doc.update(env=self.env, envs_per_client=self.envs_per_client, target_return=self.target)
        doc["run_dir"] = str(self.run_dir)
        return doc


class OptionsError(ValueError):
    """Options that cannot work together; the message says what to change."""


def resolve(options: LocalOptions) -> Resolved:
    """Fill defaults from presets or the resumed run; raise ``OptionsError`` on contradictions."""
    saved: dict[str, Any] | None = None
    env = options.env
    if options.resume is not None:
        if options.run_dir is not None and options.run_dir.resolve() != options.resume.resolve():
            raise OptionsError("--resume DIR continues the run in DIR; leave out --run-dir")
        try:
            config = read_config(options.resume / "config.json")
        except FileNotFoundError as err:
            raise OptionsError(str(err)) from None
        saved_env = str(config["local"]["env"])
        if env is not None and env != saved_env:
            raise OptionsError(f"{options.resume} trained {saved_env}; --env {env} cannot resume it")
        env, saved = saved_env, config.get("services", {})
        if options.env_spec is None and config["local"].get("env_spec"):
            options = replace(options, env_spec=Path(config["local"]["env_spec"]))
    if options.env_spec is not None:
        return _resolve_spec_run(options, env, saved)
    env = env or DEFAULT_ENV
    check_env_id(env)  # a UserError before anything starts, not a crash loop of every service
    target = None
    if options.use_target:
        target = options.target_return if options.target_return is not None else target_return(env)
        if target is not None and not math.isfinite(target):
            raise OptionsError(f"--target-return must be a finite number, got {target}")
    if options.tensorboard and (problem := tensorboard_problem()) is not None:
        raise OptionsError(problem)
    if options.prometheus and (problem := prometheus_problem()) is not None:
        raise OptionsError(problem)
    _check_learners(options, env, saved)
    envs = options.envs_per_client or default_envs_per_client(env, options.clients)
    run_dir = options.resume or options.run_dir or default_run_dir(env)
    return Resolved(options, env, envs, target, run_dir, saved)


def _resolve_spec_run(options: LocalOptions, env: str | None, saved: dict[str, Any] | None) -> Resolved:
    """``--env-spec FILE``: the spaces from the file; with ``--env`` too they must agree (and the Python
    env clients run that env), without it the stack serves foreign clients only and has no target
    unless one is given."""
    assert options.env_spec is not None
    spec_file = options.env_spec.resolve()
    try:
        env_spec.resolve(env, spec_file)
    except env_spec.EnvSpecError as err:
        raise OptionsError(str(err)) from None
    if not env and options.clients > 0:
        raise OptionsError(
            "--env-spec without --env serves clients of your own: pass --clients 0 "
            "(or --env ID to also run Python env clients of a Gymnasium env)"
        )
    target = options.target_return if options.use_target else None
    if target is None and env and options.use_target:
        target = target_return(env)
    if target is not None and not math.isfinite(target):
        raise OptionsError(f"--target-return must be a finite number, got {target}")
    envs = options.envs_per_client or default_envs_per_client(env or "", options.clients)
    run_dir = options.resume or options.run_dir or default_run_dir(env or spec_file.stem)
    return Resolved(replace(options, env_spec=spec_file), env or "", envs, target, run_dir, saved)


def _check_learners(options: LocalOptions, env: str, saved: dict[str, Any] | None) -> None:
    """N learner ranks split each batch of B rollouts: B must be a multiple of N."""
    learner = next((saved[n] for n in ("learner", "learner-0") if saved and n in saved), None)
    given = (options.overrides.get("learner") or {}).get("batch_size")
    batch = int(
        given
        or (learner or preset(env).overrides).get("batch_size", LearnerSettings.model_fields["batch_size"].default)
    )
    if batch % options.learners:
        raise OptionsError(
            f"--learners {options.learners} must divide the batch size {batch} (each rank learns B / N rollouts)"
        )
