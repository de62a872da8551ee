"""Rollout accounting read from Redis, and the table of scenarios the fault tests fill in.

Every rollout that reaches Redis is counted once as ``rollouts_produced`` in the same MULTI as its
XADD; it leaves the stream only through the learner's ack script (``rollouts_consumed``) or its drop
(``rollouts_dropped``), each counted in the script that deletes it. So at every instant

    produced == consumed + dropped + XLEN          (XLEN = pending + unread)

and ``lost`` (the left side minus the right) must read 0. Shed rollouts never enter the stream; they
have their own counter. Read in one MULTI, the numbers are one consistent snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from impala.core.redis_keys import LEARNER_GROUP, RunKeys
from impala.core.redis_records import text
from impala.core.rollouts import from_proto
from impala.rollout.v1 import rollout_pb2


@dataclass(frozen=True)
class Ledger:
    """One consistent snapshot of a run's rollout counters and stream."""

    produced: int
    consumed: int
    shed: int
    dropped: int
    in_stream: int
    pending: int

    @property
    def unread(self) -> int:
        return self.in_stream - self.pending

    @property
    def lost(self) -> int:
        """Rollouts that reached Redis and are neither consumed, dropped nor in the stream."""
        return self.produced - self.consumed - self.dropped - self.in_stream


def read_ledger(client: redis.Redis, keys: RunKeys) -> Ledger:
    """Counters, XLEN and the group's pending count from one MULTI/EXEC."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.counters)
        pipe.xlen(keys.rollouts)
        pipe.xpending(keys.rollouts, LEARNER_GROUP)
        counters, length, pending = pipe.execute(raise_on_error=False)
    numbers = {text(k): int(v) for k, v in counters.items()}
    return Ledger(
        produced=numbers.get("rollouts_produced", 0),
        consumed=numbers.get("rollouts_consumed", 0),
        shed=numbers.get("rollouts_shed", 0),
        dropped=numbers.get("rollouts_dropped", 0),
        in_stream=int(length),
        pending=0 if isinstance(pending, Exception) else int(pending["pending"]),  # no group yet
    )


def stream_steps(client: redis.Redis, keys: RunKeys) -> tuple[int, list[str]]:
    """Env steps held by the rollouts now in the stream (pending or unread), and their ids."""
    steps, ids = 0, []
    entries: Any = client.xrange(keys.rollouts)
    for entry_id, fields in entries:
        steps += from_proto(rollout_pb2.Rollout.FromString(fields[b"r"])).length
        ids.append(text(entry_id))
    return steps, ids


def pending_ids(client: redis.Redis, keys: RunKeys) -> list[str]:
    """Ids of every entry read by some learner and not yet acknowledged."""
    rows: Any = client.xpending_range(keys.rollouts, LEARNER_GROUP, min="-", max="+", count=100_000)
    return [text(row["message_id"]) for row in rows]


def in_stream(client: redis.Redis, keys: RunKeys, ids: list[str]) -> list[str]:
    """Those of ``ids`` still in the stream (acknowledged entries are deleted)."""
    with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(keys.rollouts, min=entry_id, max=entry_id)
        found = pipe.execute()
    return [entry_id for entry_id, rows in zip(ids, found, strict=True) if rows]


@dataclass(frozen=True)
class Row:
    """One scenario's line in the table: the ledger after the fault, and what was lost before Redis."""

    scenario: str
    ledger: Ledger
    lost_before_redis: str = "0"
    notes: str = ""


@dataclass
class Table:
    """Rows appended by the tests, printed by ``conftest.pytest_terminal_summary``."""

    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("\n" + self.render([row]))  # visible with -s, and in the log of a failing test

    def render(self, rows: list[Row] | None = None) -> str:
        head = (
            "| scenario | produced | consumed | pending | unread | shed | dropped | lost in Redis "
            "| lost before Redis | notes |"
        )
        lines = [head, "|" + "---|" * 10]
        for r in rows if rows is not None else self.rows:
            g = r.ledger
            lines.append(
                f"| {r.scenario} | {g.produced} | {g.consumed} | {g.pending} | {g.unread} | {g.shed} "
                f"| {g.dropped} | {g.lost} | {r.lost_before_redis} | {r.notes} |"
            )
        return "\n".join(lines)


TABLE = Table()
