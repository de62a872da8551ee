"""Settings base: one pydantic-settings class per service, environment prefix ``IMPALA_``.

Field names are the Helm chart's ``config`` keys of that service (tests/chart checks the parity), so
``IMPALA_UNROLL_LENGTH`` in a pod and ``--unroll-length`` on the CLI set the same field.
"""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, SecretStr, model_validator
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, SettingsConfigDict

from impala.core.presets import resolve, sources

log = logging.getLogger(__name__)
MASK = "**********"


class Caseless:
    """Marks a ``Literal`` of strings as matched without regard to case (``debug`` reads as ``DEBUG``).

    ``Annotated[Literal["a", "b"], CASELESS]``: a value that equals a choice up to case becomes that
    choice; anything else is left for the ``Literal`` to refuse, listing the choices. The CLI reads the
    same ``Literal`` to offer the choices (``impala.core.cli_options``).
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        choices = [str(choice) for choice in typing.get_args(source)]

        def canonical(value: Any) -> Any:
            if isinstance(value, str):
                for choice in choices:
                    if value.casefold() == choice.casefold():
                        return choice
            return value

        return core_schema.no_info_before_validator_function(canonical, handler(source))


CASELESS = Caseless()

Scope = Literal["run", "wire", "deployment", "tuning"]
"""Who decides a setting, declared once on its field (``json_schema_extra=RUN | WIRE | DEPLOYMENT``; a
field that declares none is ``tuning``). Every list of fields by role derives from it: the chart's
``shared`` block and its chart-owned fields (scripts/chart_schema.py), what ``impala local``'s plan
copies between services or sets per session, and which settings it offers as flags.

- ``run``: one value for every service of a run (its name, env, model): the chart's ``shared``.
- ``wire``: fixed by the protocol between pools and learner (T): shared the same way.
- ``deployment``: wiring set by whoever deploys (addresses, ports, secrets, mounted paths, replica ids):
  chart-owned, set per session by ``impala local``, never read from a config file.
- ``tuning``: everything else: a chart ``config`` key and an ``impala local`` flag.
"""
RUN: dict[str, Any] = {"scope": "run"}
WIRE: dict[str, Any] = {"scope": "wire"}
DEPLOYMENT: dict[str, Any] = {"scope": "deployment"}


def scope_of(settings: type[BaseSettings], name: str) -> Scope:
    """The declared scope of one field (``tuning`` when none is declared)."""
    extra = settings.model_fields[name].json_schema_extra
    scope = extra.get("scope", "tuning") if isinstance(extra, dict) else "tuning"
    assert scope in typing.get_args(Scope), f"{settings.__name__}.{name}: unknown scope {scope!r}"
    return typing.cast(Scope, scope)


def fields_in_scope(*classes: type[BaseSettings], scopes: tuple[Scope, ...]) -> frozenset[str]:
    """The fields of ``classes`` whose scope is one of ``scopes``."""
    return frozenset(name for cls in classes for name in cls.model_fields if scope_of(cls, name) in scopes)


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], CASELESS]
LogFormat = Annotated[Literal["json", "text"], CASELESS]
ModelKind = Annotated[Literal["auto", "mlp", "shallow", "resnet"], CASELESS]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def read_secret(value: SecretStr, file: Path | None) -> str:
    """A secret given as a value or as a file (the file wins; surrounding whitespace is dropped)."""
    if file is not None:
        return file.read_text().strip()
    return value.get_secret_value()


def public_values(settings: BaseSettings) -> dict[str, Any]:
    """The one masking rule: ``settings`` as JSON-safe values, every secret replaced by ``MASK``.

    Secrets are the ``SecretStr`` fields (every token is one; ``*_token_file`` fields hold only a
    path) and the password inside a ``*_url``. Used for config.json, checkpoints and log lines.
    """
    out: dict[str, Any] = {}
    for key, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            out[key] = MASK if value.get_secret_value() else ""
        elif key.endswith("_url") and isinstance(value, str):
            out[key] = _mask_url_password(value)
        elif isinstance(value, Path):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def secret_values(settings: BaseSettings) -> list[str]:
    """Every secret ``settings`` holds: its ``SecretStr`` values, what their ``<name>_file`` fields
    point to, and URL passwords (``impala.core.logs`` masks them in every log line)."""
    found: list[str] = []
    for key, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
            file = getattr(settings, f"{key}_file", None)
            if isinstance(file, Path) and file.is_file():
                found.append(read_secret(value, file))
        elif key.endswith("_url") and isinstance(value, str) and (password := urlsplit(value).password):
            found.append(password)
    return [secret for secret in found if secret]


class ServiceSettings(BaseSettings):
    """Fields every service shares. Subclasses add their own; every field carries a description."""

    model_config = SettingsConfigDict(
        env_prefix="IMPALA_", extra="forbid", validate_default=True, frozen=True, populate_by_name=True
    )
    service_name: ClassVar[str] = "impala"

    run: str = Field(
        "default",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
        description="Run name; scopes every Redis key.",
        json_schema_extra=RUN,
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss://).", json_schema_extra=DEPLOYMENT
    )
    log_level: LogLevel = Field("INFO", description="Log level.")
    log_format: LogFormat = Field("json", description="Log line format.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint; 0 disables it.",
        json_schema_extra=DEPLOYMENT,
    )

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-safe values with every secret masked (``public_values``)."""
        return public_values(self)


def _mask_url_password(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _require_file(name: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise ValueError(f"{name} {path} does not exist")


class BearerToken(BaseSettings):
    """A bearer token from a value or a file: checked by the servers, sent by the env client."""

    model_config = ServiceSettings.model_config

    token: SecretStr = Field(
        SecretStr(""), description="Bearer token (servers require it, clients send it).", json_schema_extra=DEPLOYMENT
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token (wins over token).", json_schema_extra=DEPLOYMENT
    )

    @model_validator(mode="after")
    def _token_file_exists(self) -> Self:
        _require_file("token_file", self.token_file)
        return self

    def bearer_token(self) -> str:
        """The configured token ('' when none is set); token_file wins over token."""
        return read_secret(self.token, self.token_file)


class WeightsToken(BaseSettings):
    """The weight service's token as its clients (the learner, the pools) present it."""

    model_config = ServiceSettings.model_config

    weights_token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the weight service (empty = none).", json_schema_extra=DEPLOYMENT
    )
    weights_token_file: Path | None = Field(
        None,
        description="File holding the weight service's token (wins over weights_token).",
        json_schema_extra=DEPLOYMENT,
    )

    @model_validator(mode="after")
    def _weights_token_file_exists(self) -> Self:
        _require_file("weights_token_file", self.weights_token_file)
        return self

    def weights_bearer_token(self) -> str:
        """The token to present to the weight service ('' when none is set)."""
        return read_secret(self.weights_token, self.weights_token_file)


class TokenSettings(ServiceSettings, BearerToken):
    """Bearer-token authentication shared by the gRPC ingress and the control API."""

    insecure: bool = Field(
        False, description="Allow running without any token. Never in production.", json_schema_extra=DEPLOYMENT
    )

    @model_validator(mode="after")
    def _token_or_insecure(self) -> Self:
        if not self.insecure and not self.bearer_token():
            raise ValueError(
                "no token configured: set --token-file (IMPALA_TOKEN_FILE) or --token (IMPALA_TOKEN), "
                "or pass --insecure to run without one (never in production)"
            )
        return self


class ModelSettings(BaseSettings):
    """What the pools and the learner of a run must agree on: the env, the policy model (the weight
    fingerprint enforces it) and T (the rollout's shape)."""

    # Same config as ServiceSettings: a mixin with pydantic's default config would reset env_prefix.
    model_config = ServiceSettings.model_config

    env: str = Field(
        "CartPole-v1",
        description=(
            "Gymnasium environment id (module:Id imports module first); fixes the observation and action "
            "spaces unless env_spec is set, and must agree with env_spec when both are set."
        ),
        json_schema_extra=RUN,
    )
    env_spec: Path | None = Field(
        None,
        description=(
            "JSON or YAML file declaring the observation and action spaces (docs/bring-your-own-env.md); "
            "the model is built from it, no Gymnasium env needed."
        ),
        json_schema_extra=RUN,
    )
    model: ModelKind = Field(
        "auto", description="Network: auto picks mlp for vectors, shallow CNN for images.", json_schema_extra=RUN
    )
    hidden_size: int = Field(
        64, ge=1, le=8192, description="Width of the MLP layers and of the LSTM core.", json_schema_extra=RUN
    )
    use_lstm: bool = Field(
        False, description="Add an LSTM core (state reset at episode starts).", json_schema_extra=RUN
    )
    unroll_length: int = Field(
        10, ge=1, le=10_000, description="T, steps per rollout (pools and learner agree).", json_schema_extra=WIRE
    )
    device: Annotated[str, BeforeValidator(_lower)] = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Torch device (auto, cpu, cuda or cuda:N); auto picks CUDA when present.",
    )

    def env_id(self) -> str | None:
        """The Gymnasium id to derive or check the spec with: None when a spec file is set and ``env`` was
        left at its default (the file alone declares the run's spaces)."""
        if self.env_spec is not None and "env" not in self.model_fields_set:
            return None
        return self.env

    @model_validator(mode="after")
    def _env_spec_agrees(self) -> Self:
        if self.env_spec is not None:
            from impala.core.env_spec import resolve as resolve_spec  # gymnasium only when env is set too

            resolve_spec(self.env_id(), self.env_spec)  # EnvSpecError is a ValueError: a validation error
        return self


S = TypeVar("S", bound=BaseSettings)


def explicit_fields(settings: BaseSettings, environ: Mapping[str, str] | None = None) -> set[str]:
    """Fields given as arguments (CLI flags end up here) or as ``IMPALA_*`` environment variables."""
    environ = os.environ if environ is None else environ
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    from_env = {key.upper() for key in environ}
    return set(settings.model_fields_set) | {
        name for name in type(settings).model_fields if f"{prefix}{name.upper()}" in from_env
    }


def with_presets(settings: S, environ: Mapping[str, str] | None = None) -> S:
    """``settings`` with every field the user left unset taken from the env's preset (``core.presets``).

    Applies to any settings class with an ``env`` field: the learner, the pools and ``impala local``'s
    plan all go through here, so one env trains the same way from every entry point.
    """
    env_id = getattr(settings, "env_id", None)
    # A spec-only run names no env: no preset applies (its default id is not the run's env).
    env = (env_id() or "") if callable(env_id) else getattr(settings, "env", None)
    if not isinstance(env, str):
        return settings
    explicit = explicit_fields(settings, environ)
    fields = type(settings).model_fields
    given = {name: getattr(settings, name) for name in explicit if name in fields}
    defaults = {name: getattr(settings, name) for name in fields}
    effective = resolve(env, given, defaults)
    update = {name: value for name, value in effective.items() if value != defaults[name]}
    if update:
        origin = sources(env, given, update)
        log.info("env preset applied", extra={"env": env, "fields": update, "sources": origin})
    return settings.model_copy(update=update)
