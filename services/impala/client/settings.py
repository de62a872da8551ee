"""Settings of the environment client (`impala env`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """A Gymnasium vector env dialing into an ActorPool."""

    model_config = SettingsConfigDict(env_prefix="IMPALA_", extra="forbid", frozen=True)

    address: str = Field("127.0.0.1:50051", description="host:port of the ActorPool ingress.")
    env: str = Field("CartPole-v1", description="Gymnasium environment id.")
    num_envs: int = Field(16, ge=1, le=65_536, description="Envs stepped in lockstep per stream.")
    token: SecretStr = Field(SecretStr(""), description="Bearer token.")
    token_file: Path | None = Field(None, description="File holding the bearer token.")
    tls_ca: Path | None = Field(None, description="PEM CA bundle; enables TLS.")
    reconnect_on_reset: bool = Field(
        False, description="One env per stream; disconnect and redial at every episode end."
    )
    max_steps: int = Field(0, ge=0, description="Stop after this many env steps (0 = run until stopped).")
    seed: int = Field(0, description="Seed of the first env; env i gets seed + i.")
    backend: str = Field("gymnasium", pattern=r"^(gymnasium|envpool)$", description="Vector env backend.")
    backoff_max_s: float = Field(10.0, gt=0, description="Cap of the reconnect backoff.")
