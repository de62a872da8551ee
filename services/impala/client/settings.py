"""Settings of the environment client (`impala env`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from impala.core.settings import CASELESS, DEPLOYMENT, RUN, BearerToken, LogFormat, LogLevel


class ClientSettings(BearerToken):
    """How an env client dials into an ActorPool and behaves: the one client configuration, of `impala env`
    (flags, ``IMPALA_*`` variables) and of the SDK (``serve(batch, ClientSettings(address=..., ...))``).
    ``env``, ``num_envs``, ``backend`` and ``seed`` choose the Gymnasium envs of ``impala env``; an SDK
    caller brings its own batch and leaves them."""

    model_config = SettingsConfigDict(env_prefix="IMPALA_", extra="forbid", frozen=True)

    address: str = Field(
        "127.0.0.1:50051", description="host:port of the ActorPool ingress.", json_schema_extra=DEPLOYMENT
    )
    env: str = Field("CartPole-v1", description="Gymnasium environment id.", json_schema_extra=RUN)
    num_envs: int = Field(16, ge=1, le=65_536, description="Envs stepped in lockstep per stream.")
    tls_ca: Path | None = Field(None, description="PEM CA bundle; enables TLS.", json_schema_extra=DEPLOYMENT)
    tls_server_name: str = Field(
        "",
        description=(
            "Name to check in the pool's certificate instead of the address's host (dialing a load "
            "balancer's IP or a port-forward; the chart's NOTES print it)."
        ),
        json_schema_extra=DEPLOYMENT,
    )
    reconnect_on_reset: bool = Field(
        False,
        description="One env per stream, redialed at every episode end; num_envs such streams run side by side.",
    )
    max_steps: int = Field(0, ge=0, description="Stop after this many env steps (0 = run until stopped).")
    seed: int = Field(0, description="Seed of the first env; env i gets seed + i.")
    backend: Annotated[Literal["gymnasium", "envpool"], CASELESS] = Field(
        "gymnasium", description="Vector env backend."
    )
    connect_attempts: int = Field(
        20,
        ge=0,
        description="Dial attempts before the first Welcome, then stop with exit code 2 (0 = forever); "
        "after a first Welcome the client reconnects forever.",
    )
    backoff_max_s: float = Field(10.0, gt=0, description="Cap of the reconnect backoff.")
    backoff_base_s: float = Field(0.1, gt=0, description="Ceiling of the first reconnect delay (doubles per failure).")
    tls: bool = Field(False, description="Use TLS with the system's root CAs (implied by tls_ca).")
    client_name: str = Field("", max_length=128, description="Name shown in the pool's logs; default: hostname-pid.")
    log_interval_s: float = Field(10.0, gt=0, description="Period of the env steps/s log line.")
    stop_grace_s: float = Field(5.0, ge=0, description="On SIGTERM, how long to wait for the pool's pending reply.")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest gRPC message sent or received.")
    log_level: LogLevel = Field("INFO", description="Log level.")
    log_format: LogFormat = Field("json", description="Log line format.")

    def stream_name(self) -> str:
        """The name the pool logs for this client: ``client_name``, else hostname-pid."""
        return self.client_name or f"{socket.gethostname()}-{os.getpid()}"

    def ca_pem(self) -> bytes | None:
        """The PEM CA bundle to verify the pool with (None: system roots with ``tls``, or plaintext)."""
        return self.tls_ca.read_bytes() if self.tls_ca is not None else None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.tls_ca is not None and not self.tls_ca.is_file():
            raise ValueError(f"tls_ca {self.tls_ca} does not exist")
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError("backoff_base_s must not exceed backoff_max_s")
        return self
