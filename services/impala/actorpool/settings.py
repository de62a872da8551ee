"""Settings of the ActorPool ingress (`impala actorpool`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from impala.core.settings import CASELESS, DEPLOYMENT, ModelSettings, TokenSettings, WeightsToken


class ActorPoolSettings(TokenSettings, ModelSettings, WeightsToken):
    """gRPC ingress for env clients: batched inference, rollout building, backpressure."""

    host: str = Field("0.0.0.0", description="Address to listen on.", json_schema_extra=DEPLOYMENT)
    port: int = Field(
        50051,
        ge=0,
        le=65535,
        description="gRPC port for env clients (0 = any free port).",
        json_schema_extra=DEPLOYMENT,
    )
    pool_id: str = Field(
        "",
        description="Replica id stamped on rollouts and status; default: hostname-pid.",
        json_schema_extra=DEPLOYMENT,
    )
    max_batch_size: int = Field(1024, ge=1, le=65_536, description="Most env observations in one inference pass.")
    batch_timeout_s: float = Field(
        0.001,
        ge=0.0,
        le=1.0,
        description=(
            "Longest wait for streams missing from an inference batch (since its first request); "
            "0 = run what one more pass of the event loop brings."
        ),
    )
    inference: Annotated[Literal["auto", "inline", "thread"], CASELESS] = Field(
        "auto",
        description=(
            "Where the forward pass runs: inline on the event loop (small models on CPU), or on its own "
            "thread (the loop keeps reading streams while a GPU works); auto = inline on CPU, thread on CUDA."
        ),
    )
    max_envs_per_client: int = Field(256, ge=1, le=65_536, description="Largest num_envs a client may declare.")
    max_clients: int = Field(1024, ge=1, le=100_000, description="Most concurrent client streams; more are refused.")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest accepted gRPC message.")
    handshake_timeout_s: float = Field(10.0, gt=0, description="A client that sends no Hello within this is dropped.")
    idle_timeout_s: float = Field(300.0, gt=0, description="A client silent this long between steps is dropped.")
    weights_address: str = Field(
        "",
        description="host:port of the weight service; empty = keep the initial weights.",
        json_schema_extra=DEPLOYMENT,
    )
    checkpoint: Path | None = Field(
        None, description="Checkpoint file to load initial weights from.", json_schema_extra=DEPLOYMENT
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate; with tls_key serves TLS.", json_schema_extra=DEPLOYMENT
    )
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.", json_schema_extra=DEPLOYMENT)
    buffer_capacity: int = Field(
        64,
        ge=1,
        description=(
            "Rollouts the Redis stream may hold (read but unacknowledged ones included) before backpressure. "
            "A few learner batches bound the policy lag (about capacity / batch_size versions when actors "
            "outrun the learner); it must hold at least one learner batch of every rank."
        ),
    )
    shed_when_full: bool = Field(
        False, description="Drop (count and log) rollouts when the buffer is full instead of waiting."
    )
    drain_grace_s: float = Field(10.0, ge=0, description="Seconds running streams get on SIGTERM.")
    max_connection_age_s: float = Field(
        600.0,
        ge=0,
        description=(
            "Age (±10% jitter) after which a stream is ended at its next step so the client reconnects, "
            "possibly to another replica (rebalancing after a scale-out); 0 = streams live forever."
        ),
    )
    max_connection_age_grace_s: float = Field(
        30.0,
        gt=0,
        description="After max_connection_age_s, how long a stream may take to reach a step before it is cancelled.",
    )
    status_interval_s: float = Field(1.0, gt=0, description="Period of the status heartbeat written to Redis.")
    seed: int = Field(0, description="Seed of the action sampler.")

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self
