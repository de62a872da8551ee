"""``impala local``: the whole stack as processes on loopback.

Besides its own options it takes every learner, model and pool hyperparameter as a flag of the same
name as on ``impala learner`` / ``impala actorpool`` (``impala.local.config_file``), and ``--config
FILE`` (a run's ``config.json``, or a hand-written JSON/YAML file with the same keys). Flags win over
the file, the file over the env's preset, the preset over the defaults.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from impala.core.cli_options import settings_parameters


def register(app: typer.Typer) -> None:
    def local(
        ctx: typer.Context,
        env: Annotated[
            str | None, typer.Option(help="Gymnasium environment id (default: CartPole-v1, or the resumed run's).")
        ] = None,
        env_spec: Annotated[
            Path | None,
            typer.Option(
                envvar="IMPALA_ENV_SPEC",
                dir_okay=False,
                help=(
                    "Env spec file (JSON or YAML) declaring the spaces; without --env the stack serves clients "
                    "of your own (--clients 0) and has no target unless --target-return is given."
                ),
            ),
        ] = None,
        # One process with all the preset's envs: on 2 cores it solved CartPole in 40 s vs 59.5 s for
        # 2 processes × 4 envs (seed 0, same load; ADR 0007): fewer, larger messages cost the pool less.
        # 1 × 64 envs solved it in 13-19 s, 2 × 32 once not at all (policy collapse; ADR 0027).
        clients: Annotated[
            int, typer.Option(min=0, help="Env client processes to start (0 = none; dial in your own).")
        ] = 1,
        envs_per_client: Annotated[
            int | None,
            typer.Option(
                min=1, help="Envs per client process (default: the env preset's envs for impala local / clients)."
            ),
        ] = None,
        pools: Annotated[int, typer.Option(min=1, help="ActorPool replicas.")] = 1,
        learners: Annotated[
            int,
            typer.Option(min=1, max=16, help="Learner ranks (torch.distributed, gloo); each learns B / N rollouts."),
        ] = 1,
        target_return: Annotated[
            float | None,
            typer.Option(
                help="Stop when the mean return of the last 100 episodes reaches this (default: the env's Gymnasium "
                "reward_threshold; none if it declares none)."
            ),
        ] = None,
        no_target: Annotated[bool, typer.Option("--no-target", help="Train without a target return.")] = False,
        max_seconds: Annotated[float, typer.Option(min=0, help="Wall-clock budget (0 = none).")] = 0.0,
        max_env_steps: Annotated[int, typer.Option(min=0, help="Env-step budget (0 = none).")] = 0,
        run_dir: Annotated[Path | None, typer.Option(help="The run's directory (default runs/<name>).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of model, sampler and envs.")] = 0,
        resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
        tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard event files.")] = False,
        prometheus: Annotated[
            bool,
            typer.Option(
                help="Also start Prometheus (the binary on PATH) with the chart's alert rules, scraping every service."
            ),
        ] = False,
        prometheus_interval: Annotated[
            float, typer.Option(min=1, help="Prometheus scrape and rule evaluation interval, seconds.")
        ] = 5.0,
        live: Annotated[bool, typer.Option(help="Live rich display (off when stdout is not a terminal).")] = True,
        startup_timeout: Annotated[
            float, typer.Option(min=1, help="Seconds the services get to come up before the run is abandoned.")
        ] = 180.0,
        config: Annotated[
            Path | None,
            typer.Option(help="JSON/YAML file with the keys of a run's config.json; flags override it."),
        ] = None,
        **hyperparameters: Any,
    ) -> None:
        """Train on the whole stack on one machine: redis, weights, learner, control API, pools, env clients."""
        from impala.local.config_file import ConfigFileError, load, split_by_service
        from impala.local.main import run_local
        from impala.local.stack import LocalOptions

        given = {k: v for k, v in hyperparameters.items() if v is not None}
        file_options: dict[str, Any] = {}
        overrides: dict[str, dict[str, Any]] = {}
        if config is not None:
            try:
                file_options, overrides = load(config)
            except ConfigFileError as err:
                typer.echo(f"impala local: {err}", err=True)
                raise typer.Exit(2) from None
        for service, values in split_by_service(given).items():
            overrides[service] = {**overrides.get(service, {}), **values}

        def pick(name: str, option: str, value: Any) -> Any:
            """The flag when given on the command line, else the file's value, else the flag's default."""
            source = ctx.get_parameter_source(option)  # typer's own (vendored) click enum: compare by name
            if source is not None and source.name == "COMMANDLINE":
                return value
            return file_options.get(name, value)

        use_target = False if no_target else bool(file_options.get("use_target", True))
        options = LocalOptions(
            env=pick("env", "env", env),
            env_spec=env_spec,
            clients=pick("clients", "clients", clients),
            envs_per_client=pick("envs_per_client", "envs_per_client", envs_per_client),
            pools=pick("pools", "pools", pools),
            learners=pick("learners", "learners", learners),
            target_return=None if not use_target else pick("target_return", "target_return", target_return),
            use_target=use_target,
            max_seconds=pick("max_seconds", "max_seconds", max_seconds),
            max_env_steps=pick("max_env_steps", "max_env_steps", max_env_steps),
            run_dir=run_dir,
            seed=pick("seed", "seed", seed),
            resume=resume,
            tensorboard=pick("tensorboard", "tensorboard", tensorboard),
            prometheus=prometheus,
            prometheus_interval_s=prometheus_interval,
            live=live,
            startup_timeout_s=pick("startup_timeout_s", "startup_timeout", startup_timeout),
            overrides=overrides,
        )
        raise typer.Exit(run_local(options))

    _with_hyperparameter_options(local)
    app.command("local")(local)


def _with_hyperparameter_options(command: Any) -> None:
    """Replace ``**hyperparameters`` in ``command``'s signature by one option per tuned field."""
    from impala.local.config_file import TUNED_SERVICES, hyperparameter_fields

    own = inspect.signature(command)
    taken = set(own.parameters)
    fields = hyperparameter_fields()
    added: dict[str, inspect.Parameter] = {}
    for cls in TUNED_SERVICES.values():
        exclude = frozenset(name for name in cls.model_fields if name not in fields or name in taken or name in added)
        added.update({p.name: p for p in settings_parameters(cls, exclude=exclude)})
    params = [p for p in own.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = own.replace(parameters=[*params, *added.values()])
