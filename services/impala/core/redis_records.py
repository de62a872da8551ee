"""The typed schema of every Redis record the services share, one class per record.

Services talk through Redis and gRPC only, so these records are a contract between processes (and
versions of them during a rolling upgrade). Each is written with ``to_hash``/``to_json`` and read with
``from_hash``/``from_json`` of the same class, so a field renamed on one side cannot silently read as
missing on the other. Reading is lenient per field: a value that does not parse (an older or newer
writer) reads as ``None`` for that field alone and is logged once per field, never failing the reader.

Key names live in ``impala.core.redis_keys``; the rollout stream's entries are protobuf
(``impala.rollout.v1.Rollout``), not records of this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

HashValue = str | int | float
_warned: set[tuple[str, str]] = set()


def text(value: Any) -> str:
    """Redis replies as bytes or str depending on the client's ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _Record(BaseModel):
    """A flat record; unknown fields are ignored (a newer writer), unparseable ones read as None."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def _lenient(cls, data: dict[str, Any]) -> Self:
        while True:
            try:
                return cls.model_validate(data)
            except ValidationError as err:
                bad = {str(e["loc"][0]) for e in err.errors() if e["loc"] and str(e["loc"][0]) in data}
                if not bad:
                    raise
                for name in bad:
                    if (cls.__name__, name) not in _warned:
                        _warned.add((cls.__name__, name))
                        log.warning("unreadable field in a Redis record", extra={"record": cls.__name__, "field": name})
                    data.pop(name)


class HashRecord(_Record):
    """A record stored as the fields of one Redis hash."""

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Self:
        """Parse an ``HGETALL`` reply (bytes or str); absent or unreadable fields are ``None``."""
        return cls._lenient({text(k): text(v) for k, v in raw.items() if text(v) != ""})

    def to_hash(self) -> dict[str, HashValue]:
        """The fields to ``HSET`` (None fields are left out; booleans as 0/1)."""
        out: dict[str, HashValue] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            out[name] = int(value) if isinstance(value, bool) else value
        return out

    @classmethod
    def parse(cls, name: str, raw: Any) -> Any:
        """One field as ``HGET`` returns it (None when absent or unreadable), typed as the record says."""
        return getattr(cls.from_hash({} if raw is None else {cls.field(name): raw}), name)

    @classmethod
    def field(cls, name: str) -> str:
        """``name``, checked to be a field of this record (for HGET/HINCRBY of a single field)."""
        if name not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
        return name


class RunState(HashRecord):
    """``RunKeys.state``: the run's desired state, written by the control API."""

    paused: bool | None = None
    updated_unix: float | None = None

    @classmethod
    def is_paused(cls, raw: Any) -> bool:
        """The ``paused`` field as ``HGET`` returns it (None, never set: running)."""
        return cls.parse("paused", raw) is True


class LearnerStatus(HashRecord):
    """``RunKeys.learner_status``: the learner's heartbeat and progress (rank 0 writes it)."""

    heartbeat: float | None = None
    learner_step: int | None = None
    env_steps: int | None = None
    env_steps_per_second: float | None = None
    policy_version: int | None = None
    policy_lag_mean: float | None = None
    episode_return_mean: float | None = None
    episodes: int | None = None
    paused: bool | None = None  # the learner's effective state (it may lag the desired one)
    last_checkpoint: str | None = None
    last_checkpoint_step: int | None = None
    last_checkpoint_unix: float | None = None
    last_command_id: str | None = None  # the last command-stream entry served
    # Of the learner's last update (absent before the first).
    pg_loss: float | None = None
    baseline_loss: float | None = None
    entropy_loss: float | None = None
    grad_norm: float | None = None
    learning_rate: float | None = None
    # Of the last periodic evaluation (absent before the first; impala.learner.eval_schedule).
    eval_return_greedy: float | None = None
    eval_return_sampled: float | None = None
    eval_env_steps: int | None = None
    best_return: float | None = None


class PoolStatus(HashRecord):
    """``RunKeys.pool_status(pool_id)``: one ActorPool replica's heartbeat (expires with it)."""

    heartbeat: float | None = None
    paused: bool | None = None
    clients: int | None = None
    env_steps: int | None = None
    rollouts_produced: int | None = None
    rollouts_shed: int | None = None
    policy_version: int | None = None
    address: str | None = None
    # The pool's backpressure limit (actorpool.buffer_capacity): the learner checks that a batch fits.
    buffer_capacity: int | None = None


class RunCounters(HashRecord):
    """``RunKeys.counters``: run-wide rollout counters, only ever incremented (HINCRBY)."""

    rollouts_produced: int | None = None
    rollouts_consumed: int | None = None
    rollouts_shed: int | None = None
    rollouts_dropped: int | None = None


CheckpointState = Literal["pending", "done", "failed"]


class CheckpointRecord(_Record):
    """One value of ``RunKeys.checkpoints`` (JSON under the checkpoint id): pending, then done or failed."""

    FINAL: ClassVar[tuple[str, ...]] = ("done", "failed")

    id: str
    status: CheckpointState
    path: str | None = None
    step: int | None = None
    bytes: int | None = None
    created_unix: float | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, checkpoint_id: str, raw: Any) -> Self:
        """Parse a stored value; an unreadable one reads as failed rather than breaking a listing."""
        try:
            return cls.model_validate({**json.loads(text(raw)), "id": checkpoint_id})
        except (ValueError, TypeError, ValidationError):
            log.warning("unreadable checkpoint record", extra={"checkpoint_id": checkpoint_id})
            return cls(id=checkpoint_id, status="failed", error="unreadable record in Redis")

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class Command(_Record):
    """One entry of ``RunKeys.commands``: ``cmd`` names it; ``id`` is the checkpoint id for a checkpoint."""

    cmd: str
    id: str | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Self | None:
        """Parse a stream entry's fields; None for an entry without a command name."""
        data = {text(k): text(v) for k, v in raw.items()}
        return cls._lenient(data) if data.get("cmd") else None

    def to_fields(self) -> dict[str, HashValue]:
        return {name: value for name, value in self.model_dump(exclude_none=True).items()}
