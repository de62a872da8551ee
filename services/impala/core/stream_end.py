"""How an ActorPool ends a stream that its client should resume rather than restart (docs/protocol.md).

A pool that drains (SIGTERM) or rotates a stream past ``max_connection_age_s`` has recorded the last
``Step`` it read and not answered it: the client's envs still stand at that step's observations. The
pool ends the stream with ``UNAVAILABLE`` and this trailing metadata, and the client dials again (any
replica) and sends those same observations as the new stream's first ``Step``: no env step is lost and
no episode restarts. Without the key (a crash, a lost connection) a client cannot know what the pool
recorded and starts fresh episodes.
"""

from __future__ import annotations

from collections.abc import Iterable

RESUME_KEY = "impala-resume"
RESUME_METADATA = ((RESUME_KEY, "true"),)


def asks_to_resume(trailing: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a stream's trailing metadata carries the resume key."""
    return trailing is not None and any(key == RESUME_KEY for key, _ in trailing)
