"""Request and response bodies of the control API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from impala.core.redis_records import CheckpointRecord, CheckpointState


class Health(BaseModel):
    """Answer of /healthz."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Answer of /readyz when ready."""

    redis: bool = Field(description="Redis answered PING.")
    learner_heartbeat_age_s: float = Field(description="Seconds since the learner's last heartbeat.")


class RolloutCounters(BaseModel):
    """Run-wide rollout accounting (the ``counters`` hash)."""

    produced: int = 0
    shed: int = 0
    consumed: int = 0
    dropped: int = 0


class RunStatus(BaseModel):
    """Answer of GET /v1/status. Learner fields are null until the learner has written its first status."""

    run: str = Field(description="Run name.")
    paused: bool = Field(description="Desired state set through this API.")
    learner_paused: bool | None = Field(description="Whether the learner has actually stopped stepping.")
    learner_alive: bool = Field(description="The learner's heartbeat is younger than learner_timeout_s.")
    learner_heartbeat_age_s: float | None = Field(description="Seconds since the learner's last heartbeat.")
    learner_step: int | None = Field(description="Optimizer steps taken.")
    env_steps: int | None = Field(description="Environment steps learned from.")
    env_steps_per_second: float | None = Field(description="Recent env steps per second at the learner.")
    policy_version: int | None = Field(description="Version of the latest published weights.")
    policy_lag_mean: float | None = Field(description="Mean policy lag (versions) of recent rollouts.")
    episode_return_mean: float | None = Field(description="Mean return of the last 100 episodes.")
    episodes: int | None = Field(description="Episodes completed.")
    last_checkpoint: str | None = Field(description="Path of the newest checkpoint.")
    last_checkpoint_step: int | None = Field(description="Learner step of the newest checkpoint.")
    buffer_depth: int = Field(description="Rollouts waiting in the Redis stream.")
    clients: dict[str, int] = Field(description="Connected env clients per live ActorPool replica.")
    rollouts: RolloutCounters = Field(description="Run-wide rollout counters.")


class PauseState(BaseModel):
    """Answer of POST /v1/pause and /v1/resume."""

    run: str
    paused: bool


class CheckpointAccepted(BaseModel):
    """Answer of POST /v1/checkpoints without wait: the learner will write it."""

    id: str
    status: CheckpointState = "pending"


class Checkpoint(CheckpointRecord):
    """A checkpoint record (the ``checkpoints`` hash, written by the learner)."""


class CheckpointList(BaseModel):
    """Answer of GET /v1/checkpoints, newest first."""

    checkpoints: list[Checkpoint]


class ReplicasRequest(BaseModel):
    """Body of PUT /v1/actorpool/replicas."""

    replicas: int = Field(ge=1, description="Desired ActorPool replicas (at most max_actorpool_replicas).")


class Replicas(BaseModel):
    """The ActorPool Deployment's scale."""

    namespace: str
    deployment: str
    replicas: int = Field(description="Desired replicas (spec).")
    current: int | None = Field(None, description="Replicas that exist now (status).")
