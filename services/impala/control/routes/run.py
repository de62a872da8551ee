"""POST /v1/pause and /v1/resume: set the run's desired state in Redis. The learner stops stepping and
every pool holds its replies within a poll period (0.25 s); clients wait, nothing is dropped."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from impala.control.deps import ContextDep, StoreDep, require_token
from impala.control.models import PauseState
from impala.control.problems import ProblemError, problem_responses

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["run"], dependencies=[Depends(require_token)])


async def _set(ctx: ContextDep, store: StoreDep, paused: bool) -> PauseState:
    if not await store.set_paused(paused):
        word = "paused" if paused else "running"
        raise ProblemError(
            409,
            "already-paused" if paused else "already-running",
            f"Already {word}",
            f"Run {store.keys.run!r} is already {word}; nothing changed.",
        )
    command = "pause" if paused else "resume"
    ctx.metrics.commands.labels(command).inc()
    log.info(f"run {command}d", extra={"run": store.keys.run, "command": command})
    return PauseState(run=store.keys.run, paused=paused)


@router.post("/pause", responses=problem_responses(401, 409, 503))
async def pause(ctx: ContextDep, store: StoreDep) -> PauseState:
    """Pause the run (409 already-paused when it is). Works while the learner is down: the state lives
    in Redis and a restarted learner or pool reads it first."""
    return await _set(ctx, store, True)


@router.post("/resume", responses=problem_responses(401, 409, 503))
async def resume(ctx: ContextDep, store: StoreDep) -> PauseState:
    """Resume a paused run (409 already-running when it is not paused); counters continue where they were."""
    return await _set(ctx, store, False)
