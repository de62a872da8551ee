"""Checkpoints: POST sends a command to the learner through Redis; the learner writes the checkpoint and
marks its record done (or failed) in the checkpoints hash, which GET reads."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from impala.control.deps import ContextDep, StoreDep, require_token
from impala.control.models import Checkpoint, CheckpointAccepted, CheckpointList
from impala.control.problems import ProblemError, problem_responses
from impala.control.store import RunStore

log = logging.getLogger(__name__)

POLL_S = 0.1

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"], dependencies=[Depends(require_token)])

CheckpointId = Annotated[str, Path(min_length=1, max_length=128, description="Checkpoint id.")]


def _learner_gone(age: float | None, limit: float) -> ProblemError:
    seen = "never written" if age is None else f"{age:.1f} s old"
    return ProblemError(
        503,
        "learner-unavailable",
        "Learner unavailable",
        f"No live learner to write a checkpoint: its heartbeat is {seen} (limit {limit:g} s).",
        headers={"Retry-After": "10"},
    )


async def _wait(store: RunStore, checkpoint_id: str, timeout_s: float, learner_timeout_s: float) -> Checkpoint:
    """Poll the record until the learner settles it; 503 if the learner dies meanwhile, 504 at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = await store.checkpoint(checkpoint_id)
        if record is not None and record.status != "pending":
            return record
        age = await store.learner_heartbeat_age()
        if not store.learner_alive(age):
            raise _learner_gone(age, learner_timeout_s)
        if time.monotonic() >= deadline:
            raise ProblemError(
                504,
                "checkpoint-timeout",
                "Checkpoint still pending",
                f"Checkpoint {checkpoint_id} was not written within {timeout_s:g} s; "
                f"poll GET /v1/checkpoints/{checkpoint_id}.",
                headers={"Location": f"/v1/checkpoints/{checkpoint_id}"},
            )
        await asyncio.sleep(POLL_S)


@router.post(
    "",
    status_code=202,
    response_model=None,
    responses={
        202: {"model": CheckpointAccepted, "description": "Requested; the learner will write it."},
        201: {"model": Checkpoint, "description": "Written (with ?wait=true)."},
        **problem_responses(401, 422, 502, 503, 504),
    },
)
async def create_checkpoint(
    ctx: ContextDep,
    store: StoreDep,
    response: Response,
    wait: Annotated[bool, Query(description="Answer once the checkpoint is written (201), not at once (202).")] = False,
) -> CheckpointAccepted | Checkpoint:
    """Ask the learner for a checkpoint. 503 when no learner is alive to write it; with ``wait``, 201
    once written, 502 when the learner reports a failure, 504 after ``checkpoint_wait_s``."""
    age = await store.learner_heartbeat_age()
    if not store.learner_alive(age):
        raise _learner_gone(age, ctx.settings.learner_timeout_s)
    checkpoint_id = await store.request_checkpoint()
    ctx.metrics.commands.labels("checkpoint").inc()
    log.info("checkpoint requested", extra={"checkpoint_id": checkpoint_id, "wait": wait})
    response.headers["Location"] = f"/v1/checkpoints/{checkpoint_id}"
    if not wait:
        return CheckpointAccepted(id=checkpoint_id)
    record = await _wait(store, checkpoint_id, ctx.settings.checkpoint_wait_s, ctx.settings.learner_timeout_s)
    if record.status == "failed":
        raise ProblemError(
            502,
            "checkpoint-failed",
            "Checkpoint failed",
            f"The learner could not write it: {record.error or 'unknown'}",
        )
    response.status_code = 201
    return record


@router.get("", responses=problem_responses(401, 503))
async def list_checkpoints(store: StoreDep) -> CheckpointList:
    """Every checkpoint record (pending, done and failed), newest first."""
    return CheckpointList(checkpoints=await store.checkpoints())


@router.get("/{checkpoint_id}", responses=problem_responses(401, 404, 422, 503))
async def get_checkpoint(store: StoreDep, checkpoint_id: CheckpointId) -> Checkpoint:
    """One checkpoint record; 404 for an unknown id."""
    record = await store.checkpoint(checkpoint_id)
    if record is None:
        raise ProblemError(404, "checkpoint-not-found", "Unknown checkpoint", f"No checkpoint {checkpoint_id!r}.")
    return record
