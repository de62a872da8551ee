"""Build a typer command whose options are a settings class's fields.

Every field becomes ``--field-name`` with the field's description as help; a flag left out falls
back to the ``IMPALA_FIELD_NAME`` environment variable, then to the default. So the CLI, the
environment and the Helm ``config`` block share one list of names.

The help of each option shows its variable and default (``[env: IMPALA_PORT; default: 50051]``,
escaped so Rich prints it instead of reading it as markup); a ``Literal`` field is a choice matched
without regard to case; a secret's help says to prefer its ``*_file`` twin (a value on a command
line shows in ``ps``). Invalid settings end the command with one line naming where the bad value
came from (the flag, or the ``IMPALA_*`` variable) and exit code 2.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from rich.markup import escape

S = TypeVar("S", bound=BaseSettings)
ENV_PREFIX = "IMPALA_"


def env_name(field_name: str) -> str:
    """The environment variable of a settings field."""
    return f"{ENV_PREFIX}{field_name.upper()}"


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _cli_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return annotation
    if annotation is SecretStr:
        return str
    if annotation in (str, int, float, bool, Path):
        return annotation
    return str


def _shown(default: Any) -> str:
    """A default as a user would type it."""
    if isinstance(default, SecretStr):
        return "none" if not default.get_secret_value() else "(set)"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if default == "":
        return '""'
    return str(default)


def option_help(field_name: str, field: FieldInfo) -> str:
    """Description, the secret note, ``[env: IMPALA_X; default: D]``; escaped for Rich."""
    text = field.description or ""
    if field.annotation is SecretStr:
        text += f" Prefer {flag_name(field_name)}-file: a value on the command line shows in ps."
    return escape(f"{text} [env: {env_name(field_name)}; default: {_shown(field.default)}]")


def _option(field_name: str, field: FieldInfo, cli_type: Any) -> Any:
    flag = flag_name(field_name)
    decls = [f"{flag}/--no-{flag[2:]}"] if cli_type is bool else [flag]
    return typer.Option(
        *decls,
        help=option_help(field_name, field),
        show_default=False,
        case_sensitive=False,
        metavar="TOKEN" if field.annotation is SecretStr else None,
    )


def describe_errors(
    err: ValidationError, settings_cls: type[BaseSettings], given: Mapping[str, Any], environ: Mapping[str, str]
) -> str:
    """One line: each error with where its value came from (a flag, or an ``IMPALA_*`` variable)."""
    upper_env = {key.upper(): value for key, value in environ.items()}
    parts = []
    for error in err.errors():
        loc = [str(p) for p in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if not loc:
            parts.append(message)
            continue
        name = loc[0]
        secret = name in settings_cls.model_fields and settings_cls.model_fields[name].annotation is SecretStr
        if name in given:
            where = flag_name(name)
            value = given[name]
        elif env_name(name) in upper_env:
            where = f"environment variable {env_name(name)}"
            value = upper_env[env_name(name)]
        else:
            where, value = name, None
        shown = "" if secret or value is None else f" = {str(value)!r}"
        parts.append(f"{where}{shown}: {message}")
    return "; ".join(parts)


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
            problem = describe_errors(err, settings_cls, given, os.environ)
            typer.echo(f"impala {name}: invalid settings: {problem} (see impala {name} --help)", err=True)
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
        annotation = Annotated[cli_type | None, _option(field_name, field, cli_type)]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    return params
