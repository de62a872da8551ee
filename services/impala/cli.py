"""The ``impala`` command line. Service modules are imported lazily so ``impala --help`` stays fast
and torch-free services never load torch."""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Annotated

import typer

from impala.actorpool.settings import ActorPoolSettings
from impala.client.settings import ClientSettings
from impala.control.settings import ControlSettings
from impala.core.cli_options import settings_command
from impala.core.errors import USAGE_EXIT_CODE, UserError
from impala.learner.settings import LearnerSettings
from impala.weights.settings import WeightsSettings

app = typer.Typer(
    name="impala",
    help="IMPALA (V-trace) actor-learner RL: ActorPool ingress, Redis Streams buffer, learner, weights, control API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
_debug = False


def version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("impala-rl")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"impala {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error a user can fix.")] = False,
) -> None:
    """IMPALA (V-trace) actor-learner RL: ActorPool ingress, Redis Streams buffer, learner, weights, control API."""
    global _debug
    _debug = debug


def _actorpool(settings: ActorPoolSettings) -> int:
    from impala.actorpool.main import run

    return run(settings)


def _learner(settings: LearnerSettings) -> int:
    from impala.learner.main import run

    return run(settings)


def _weights(settings: WeightsSettings) -> int:
    from impala.weights.main import run

    return run(settings)


def _control(settings: ControlSettings) -> int:
    from impala.control.main import run

    return run(settings)


def _env(settings: ClientSettings) -> int:
    from impala.client.main import run

    return run(settings)


settings_command(
    app,
    "actorpool",
    ActorPoolSettings,
    _actorpool,
    "Run the ActorPool gRPC ingress that env clients dial into.",
)
settings_command(
    app,
    "learner",
    LearnerSettings,
    _learner,
    "Run the V-trace learner: Redis rollouts in, weights out, checkpoints.",
)
settings_command(app, "weights", WeightsSettings, _weights, "Run the weight-broadcast gRPC service.")
settings_command(
    app,
    "control",
    ControlSettings,
    _control,
    "Run the FastAPI control API (pause, resume, checkpoint, status, scale).",
)
settings_command(app, "env", ClientSettings, _env, "Run a Gymnasium vector env as a client of an ActorPool.")


def _register_optional() -> None:
    """Commands with their own option sets live next to their code."""
    from impala.local.cli import register as register_local
    from impala.tools.cli import register as register_tools

    register_local(app)
    register_tools(app)


_register_optional()


def main() -> None:
    """Entry point: a ``UserError`` is one line on stderr and exit code 2 (its traceback with --debug)."""
    try:
        app(standalone_mode=True)
    except UserError as err:
        if _debug:
            raise
        typer.echo(f"impala: {err}", err=True)
        sys.exit(USAGE_EXIT_CODE)
