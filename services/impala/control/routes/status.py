"""GET /v1/status: the run at a glance, read from the status hashes the learner and pools write."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from impala.control.deps import StoreDep, require_token
from impala.control.models import RunStatus
from impala.control.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["status"], dependencies=[Depends(require_token)])


@router.get("/status", responses=problem_responses(401, 503))
async def get_status(store: StoreDep) -> RunStatus:
    """Pause state, learner counters, buffer depth and clients per live ActorPool. Works while the
    learner is gone (``learner_alive`` is then false); 503 only when Redis is unreachable."""
    return await store.status()
