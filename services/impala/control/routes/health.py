"""Probes: /healthz (the process lives) and /readyz (Redis answers and the learner's heartbeat is fresh).
Both work without the token so kubelets and load balancers can call them."""

from __future__ import annotations

from fastapi import APIRouter

from impala.control.deps import ContextDep, StoreDep
from impala.control.models import Health, Readiness
from impala.control.problems import ProblemError, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: 200 as long as the process serves requests; touches nothing else."""
    return Health()


@router.get("/readyz", responses=problem_responses(503))
async def readyz(ctx: ContextDep, store: StoreDep) -> Readiness:
    """Readiness: Redis reachable (else 503 redis-unavailable) and the learner's heartbeat younger than
    ``learner_timeout_s`` (else 503 learner-unavailable)."""
    await store.ping()
    age = await store.learner_heartbeat_age()
    if age is None or not store.learner_alive(age):
        seen = "never written" if age is None else f"{age:.1f} s old"
        raise ProblemError(
            503,
            "learner-unavailable",
            "Learner unavailable",
            f"The learner's heartbeat is {seen} (limit {ctx.settings.learner_timeout_s:g} s): is the learner running?",
            headers={"Retry-After": "5"},
        )
    return Readiness(redis=True, learner_heartbeat_age_s=round(age, 3))
