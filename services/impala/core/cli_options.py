"""Build a typer command whose options are a settings class's fields.

Every field becomes ``--field-name`` with the field's description as help; a flag left out falls
back to the ``IMPALA_FIELD_NAME`` environment variable, then to the default. So the CLI, the
environment and the Helm ``config`` block share one list of names.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def _cli_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    if annotation is SecretStr:
        return str
    if annotation in (str, int, float, bool, Path):
        return annotation
    return str


def settings_command(
    app: typer.Typer,
    name: str,
    settings_cls: type[S],
    runner: Callable[[S], int | None],
    help_text: str,
    *,
    exclude: tuple[str, ...] = (),
) -> None:
    """Register ``name`` on ``app``: parse options into ``settings_cls`` and call ``runner``."""
    params = settings_parameters(settings_cls, exclude=exclude)
    annotations = {param.name: param.annotation for param in params}

    def command(**kwargs: Any) -> None:
        given = {k: v for k, v in kwargs.items() if v is not None}
        try:
            settings = settings_cls(**given)
        except ValidationError as err:
            lines = [f"  --{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in err.errors()]
            typer.echo("invalid settings:\n" + "\n".join(lines), err=True)
            raise typer.Exit(2) from None
        code = runner(settings)
        raise typer.Exit(code or 0)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__doc__ = help_text
    command.__name__ = name.replace("-", "_")
    app.command(name, help=help_text)(command)


def settings_parameters(
    settings_cls: type[BaseSettings], *, exclude: tuple[str, ...] | frozenset[str] = ()
) -> list[inspect.Parameter]:
    """One keyword-only ``--field-name`` option (default None: "not given") per field of ``settings_cls``."""
    params: list[inspect.Parameter] = []
    for field_name, field in settings_cls.model_fields.items():
        if field_name in exclude:
            continue
        cli_type = _cli_type(field.annotation)
        option = typer.Option(
            f"--{field_name.replace('_', '-')}",
            help=f"{field.description or ''} [env IMPALA_{field_name.upper()}; default {field.default!r}]",
            show_default=False,
        )
        if cli_type is bool:
            option = typer.Option(
                f"--{field_name.replace('_', '-')}/--no-{field_name.replace('_', '-')}",
                help=f"{field.description or ''} [env IMPALA_{field_name.upper()}; default {field.default!r}]",
                show_default=False,
            )
        annotation = Annotated[cli_type | None, option]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return params
