"""Settings of the control API (`impala control`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from impala.core.settings import DEPLOYMENT, TokenSettings


class ControlSettings(TokenSettings):
    """Stateless FastAPI app: commands travel to the learner and pools through Redis."""

    host: str = Field("0.0.0.0", description="Address to listen on.", json_schema_extra=DEPLOYMENT)
    port: int = Field(8080, ge=0, le=65535, description="HTTP port.", json_schema_extra=DEPLOYMENT)
    namespace: str = Field(
        "",
        description="Kubernetes namespace of the ActorPool Deployment; default: the pod's own.",
        json_schema_extra=DEPLOYMENT,
    )
    actorpool_deployment: str = Field(
        "impala-actorpool", description="Name of the ActorPool Deployment to scale.", json_schema_extra=DEPLOYMENT
    )
    max_actorpool_replicas: int = Field(64, ge=1, description="Upper bound accepted by PUT /v1/actorpool/replicas.")
    learner_timeout_s: float = Field(
        30.0, gt=0, description="A learner heartbeat older than this means the learner is gone."
    )
    checkpoint_wait_s: float = Field(120.0, gt=0, description="Longest wait of POST /v1/checkpoints?wait=true.")
    pool_timeout_s: float = Field(
        30.0, gt=0, description="An ActorPool whose heartbeat is older than this is left out of /v1/status."
    )
    redis_timeout_s: float = Field(
        2.0, gt=0, description="Socket timeout of each Redis call; past it the API answers 503."
    )
    metrics_public: bool = Field(
        False, description="Serve GET /metrics without the bearer token (e.g. for an in-cluster Prometheus)."
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig used outside a cluster; default: $KUBECONFIG, then ~/.kube/config.",
        json_schema_extra=DEPLOYMENT,
    )
