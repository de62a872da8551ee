"""Settings of the weight-broadcast service (`impala weights`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from impala.core.settings import DEPLOYMENT, TokenSettings


class WeightsSettings(TokenSettings):
    """Relays each published weight version to every subscriber; the latest also lives in Redis."""

    host: str = Field("0.0.0.0", description="Address to listen on.", json_schema_extra=DEPLOYMENT)
    port: int = Field(50052, ge=0, le=65535, description="gRPC port (0 = any free port).", json_schema_extra=DEPLOYMENT)
    max_version_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="Largest accepted weight version.")
    chunk_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=4 * 1024 * 1024, description="Chunk size sent to subscribers."
    )
    drain_grace_s: float = Field(5.0, ge=0, description="Seconds a running Publish gets on SIGTERM.")
    bulk: bool = Field(
        True,
        description="Offer subscribers the bulk data plane (plain TCP beside gRPC); off when TLS is configured.",
    )
    bulk_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Bulk data-plane TCP port (0 = any free port; subscribers learn it from the announcement).",
        json_schema_extra=DEPLOYMENT,
    )
    bulk_max_connections: int = Field(
        64,
        ge=1,
        description="Bulk data-plane connections at once (fetches, and one push subscription per pool); more are answered BUSY.",
    )
    bulk_request_timeout_s: float = Field(
        5.0, gt=0, description="Seconds a bulk connection may take to send its request before it is dropped."
    )
    bulk_send_timeout_s: float = Field(
        60.0, gt=0, description="Seconds a subscriber may take to receive a version over the bulk data plane."
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate; with tls_key serves TLS.", json_schema_extra=DEPLOYMENT
    )
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.", json_schema_extra=DEPLOYMENT)
