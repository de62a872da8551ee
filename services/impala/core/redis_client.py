"""Redis client factories shared by the buffer, the learner and the weight service (torch-free).

Two choices matter for multi-MB values (rollouts, weight versions):

- redis-py packs a command either with ``hiredis.pack_command`` (when hiredis is installed, sync
  client only), which copies every argument into one new buffer (measured 5x slower on MB payloads),
  or with the pure-Python packer, which keeps any argument over ``_buffer_cutoff`` (6000 bytes) as its
  own buffer and hands the caller's ``bytes`` object to the socket unchanged. The asyncio client always
  uses the Python packer; the sync client is forced onto it here. hiredis is still a dependency: its
  reply parser (C) reads ``XREADGROUP`` replies faster than redis-py's Python one (ADR 0011).
- redis-py's own retries (3 by default) are turned off: our callers retry with backoff, log one
  line per failure and can be stopped by ``close()``.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis._parsers.encoders import Encoder
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import PythonRespSerializer
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

# Errors after which the same command may succeed later: the server is down, restarting, loading
# its AOF, or was demoted to a replica by a failover.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
)

# redis-py's threshold under which arguments are concatenated into one write buffer.
BUFFER_CUTOFF = 6000


def async_client(url: str, *, socket_timeout_s: float = 10.0) -> aioredis.Redis:
    """An asyncio client without built-in retries (bytes responses)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=2.0,
        retry=AsyncRetry(NoBackoff(), 0),
    )


def sync_client(url: str, *, socket_timeout_s: float = 10.0) -> redis.Redis:
    """A sync client without built-in retries, packing commands in Python (see module docstring)."""
    kwargs: dict[str, Any] = {}
    if HIREDIS_AVAILABLE:
        kwargs["command_packer"] = PythonRespSerializer(BUFFER_CUTOFF, Encoder("utf-8", "strict", False).encode)  # type: ignore[no-untyped-call]
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )
