"""GET /metrics: Prometheus exposition of the app's registry. Needs the token unless metrics_public."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from impala.control.deps import ContextDep, CredentialsDep, check_token
from impala.control.problems import problem_responses

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
        **problem_responses(401),
    },
)
async def metrics(ctx: ContextDep, credentials: CredentialsDep) -> Response:
    """The ``impala_control_*`` metrics (plus process metrics when served by ``impala control``)."""
    if not ctx.settings.metrics_public:
        check_token(ctx, credentials)
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)
