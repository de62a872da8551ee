"""The ActorPool Deployment's replicas, through the Kubernetes API (see impala.control.scaler)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from impala.control.deps import ContextDep, require_token
from impala.control.models import Replicas, ReplicasRequest
from impala.control.problems import ProblemError, problem_responses
from impala.control.scaler import ScalerError, ScalerUnavailableError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/actorpool", tags=["actorpool"], dependencies=[Depends(require_token)])


def _problem(exc: ScalerError | ScalerUnavailableError) -> ProblemError:
    log.warning("cannot reach the ActorPool deployment", extra={"error": str(exc)})
    if isinstance(exc, ScalerUnavailableError):
        return ProblemError(503, "kubernetes-unavailable", "Kubernetes unavailable", str(exc))
    return ProblemError(exc.status, exc.kind, "Kubernetes API error", exc.detail)


@router.get("/replicas", responses=problem_responses(401, 404, 502, 503))
async def get_replicas(ctx: ContextDep) -> Replicas:
    """Desired and current replicas of the ActorPool Deployment."""
    try:
        return await ctx.scaler.get()
    except (ScalerError, ScalerUnavailableError) as exc:
        raise _problem(exc) from None


@router.put("/replicas", responses=problem_responses(401, 404, 422, 502, 503))
async def set_replicas(ctx: ContextDep, body: ReplicasRequest) -> Replicas:
    """Scale the ActorPool Deployment to ``replicas`` (1..max_actorpool_replicas). 503 outside a cluster
    without a kubeconfig; 502 when the service account lacks RBAC on deployments/scale."""
    limit = ctx.settings.max_actorpool_replicas
    if body.replicas > limit:
        raise ProblemError(
            422,
            "validation",
            "Invalid request",
            f"body.replicas: must be at most {limit} (max_actorpool_replicas)",
        )
    try:
        result = await ctx.scaler.scale(body.replicas)
    except (ScalerError, ScalerUnavailableError) as exc:
        raise _problem(exc) from None
    ctx.metrics.commands.labels("scale").inc()
    log.info("actorpool scaled", extra={"deployment": result.deployment, "replicas": result.replicas})
    return result
