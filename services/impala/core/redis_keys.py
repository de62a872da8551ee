"""Every Redis key name of the project, in one place. All keys of a run share the ``impala:{run}:``
prefix (the braces make them one Redis Cluster hash slot)."""

from __future__ import annotations

from dataclasses import dataclass

LEARNER_GROUP = "learners"


@dataclass(frozen=True)
class RunKeys:
    """Key names for one run."""

    run: str

    @property
    def prefix(self) -> str:
        return f"impala:{{{self.run}}}"

    @property
    def rollouts(self) -> str:
        """Stream of serialized ``impala.rollout.v1.Rollout`` entries (field ``r``)."""
        return f"{self.prefix}:rollouts"

    @property
    def commands(self) -> str:
        """Stream of control commands (pause, resume, checkpoint) for the learner and pools."""
        return f"{self.prefix}:commands"

    @property
    def state(self) -> str:
        """Hash of run-wide desired state: ``paused`` ('0'/'1')."""
        return f"{self.prefix}:state"

    @property
    def learner_status(self) -> str:
        """Hash written by the learner each step (heartbeat, counters, policy version)."""
        return f"{self.prefix}:learner"

    def pool_status(self, pool_id: str) -> str:
        """Hash written by one ActorPool replica (heartbeat, clients, env steps)."""
        return f"{self.prefix}:pool:{pool_id}"

    @property
    def pools(self) -> str:
        """Sorted set of ActorPool replica ids scored by last heartbeat (unix seconds)."""
        return f"{self.prefix}:pools"

    @property
    def checkpoints(self) -> str:
        """Hash checkpoint id -> JSON {status, path, step, bytes, error}."""
        return f"{self.prefix}:checkpoints"

    @property
    def weights(self) -> str:
        """Hash holding the latest published weights (version, fingerprint, sha256, payload)."""
        return f"{self.prefix}:weights"

    @property
    def counters(self) -> str:
        """Hash of run-wide counters (rollouts produced, shed, dropped)."""
        return f"{self.prefix}:counters"
