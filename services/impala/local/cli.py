"""``impala local``: the whole stack as processes on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("local")
    def local(
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
        use_lstm: Annotated[
            bool | None, typer.Option("--use-lstm/--no-use-lstm", help="Add an LSTM core (default: the preset's).")
        ] = None,
        hidden_size: Annotated[
            int | None, typer.Option(min=1, help="Width of the MLP layers and the LSTM (default: the preset's).")
        ] = None,
        # One process with all the preset's envs: on 2 cores it solved CartPole in 40 s vs 59.5 s for
        # 2 processes × 4 envs (seed 0, same load; ADR 0007): fewer, larger messages cost the pool less.
        clients: Annotated[
            int, typer.Option(min=0, help="Env client processes to start (0 = none; dial in your own).")
        ] = 1,
        envs_per_client: Annotated[
            int | None, typer.Option(min=1, help="Envs per client process (default: the env preset's envs / clients).")
        ] = None,
        pools: Annotated[int, typer.Option(min=1, help="ActorPool replicas.")] = 1,
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
        live: Annotated[bool, typer.Option(help="Live rich display (off when stdout is not a terminal).")] = True,
        startup_timeout: Annotated[
            float, typer.Option(min=1, help="Seconds the services get to come up before the run is abandoned.")
        ] = 180.0,
    ) -> None:
        """Train on the whole stack on one machine: redis, weights, learner, control API, pools, env clients."""
        from impala.local.stack import LocalOptions, run_local

        options = LocalOptions(
            env=env,
            env_spec=env_spec,
            use_lstm=use_lstm,
            hidden_size=hidden_size,
            clients=clients,
            envs_per_client=envs_per_client,
            pools=pools,
            target_return=None if no_target else target_return,
            use_target=not no_target,
            max_seconds=max_seconds,
            max_env_steps=max_env_steps,
            run_dir=run_dir,
            seed=seed,
            resume=resume,
            tensorboard=tensorboard,
            live=live,
            startup_timeout_s=startup_timeout,
        )
        raise typer.Exit(run_local(options))
