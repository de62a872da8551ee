"""Where the weight service keeps the latest version: in memory for subscribers, mirrored to Redis
so a restarted service serves it at once.

Redis is best effort: a version is written a moment after it is served (``WRITE_DELAY_S``, so the
write does not compete with the fan-out); while Redis is down the service keeps serving from memory
and the mirror retries with backoff, writing only the newest version once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import grpc

from impala.core.backoff import Backoff
from impala.core.redis_client import TRANSIENT_ERRORS, async_client, sync_client
from impala.core.redis_keys import RunKeys
from impala.weights.chunks import MAX_CHUNK_BYTES, RejectedError, WeightVersion

log = logging.getLogger(__name__)

# How long the mirror lets subscribers fetch a new version before writing it to Redis (ADR 0009).
WRITE_DELAY_S = 0.25

_FLUSH_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *TRANSIENT_ERRORS)

# Write only when newer than what Redis holds, so a lagging replica never overwrites a newer version.
_SAVE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'fingerprint', ARGV[2], 'sha256', ARGV[3], 'payload', ARGV[4])
return 1
"""


class LatestStore:
    """The newest version; ``wait_newer`` wakes every subscriber when a newer one is committed."""

    def __init__(self) -> None:
        self.latest: WeightVersion | None = None
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def fingerprint(self) -> str:
        """The model fingerprint every version must carry ('' until the first one)."""
        return self.latest.fingerprint if self.latest is not None else ""

    def check(self, version: int, fingerprint: str) -> None:
        """Raise ``RejectedError`` (FAILED_PRECONDITION) for a version that is not newer or of another model."""
        latest = self.latest
        if latest is None:
            return
        if version <= latest.version:
            raise RejectedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "stale",
                f"stale version {version}: the service already serves version {latest.version}",
            )
        if fingerprint != latest.fingerprint:
            raise RejectedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "fingerprint",
                f"model fingerprint {fingerprint!r} differs from the served model's {latest.fingerprint!r}",
            )

    def commit(self, version: WeightVersion) -> None:
        """Serve ``version`` from now on (checked again: another publisher may have won meanwhile)."""
        self.check(version.version, version.fingerprint)
        self._set(version)

    def adopt(self, version: WeightVersion) -> bool:
        """Take a version loaded from Redis if it is newer than the one in memory."""
        if self.latest is not None and version.version <= self.latest.version:
            return False
        self._set(version)
        return True

    async def wait_newer(self, after: int) -> WeightVersion | None:
        """The latest version once it is newer than ``after``; None when the store closes."""
        while True:
            changed = self._changed
            if self._closed:
                return None
            if self.latest is not None and self.latest.version > after:
                return self.latest
            await changed.wait()

    def close(self) -> None:
        """Wake every waiter with None (service stopping)."""
        self._closed = True
        self._changed.set()

    def _set(self, version: WeightVersion) -> None:
        self.latest = version
        # A fresh event per version: waiters hold the old one, which stays set.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class RedisMirror:
    """Loads the latest version from ``keys.weights`` at start and writes each newer one back."""

    def __init__(
        self,
        redis_url: str,
        keys: RunKeys,
        *,
        chunk_bytes: int = MAX_CHUNK_BYTES,
        backoff: Backoff | None = None,
        delay_s: float = WRITE_DELAY_S,
    ) -> None:
        self.keys, self.chunk_bytes, self.delay_s = keys, chunk_bytes, delay_s
        self._client = async_client(redis_url, socket_timeout_s=30.0)
        # Writes go through a sync client on a thread: its Python packer does not copy the payload
        # (the async client's hiredis packer does), and the event loop stays free for the subscribers
        # fetching the same version meanwhile (it held the fan-out up by ~7 ms per 6.4 MB version).
        self._writer = sync_client(redis_url, socket_timeout_s=30.0)
        self._save = self._writer.register_script(_SAVE_SCRIPT)
        self._backoff = backoff or Backoff(base_s=0.1, cap_s=10.0)
        self._stop = asyncio.Event()
        self.saved_version = 0

    async def load(self) -> WeightVersion | None:
        """The stored version (checked against its sha256), or None when there is none or it is corrupt."""
        fields: dict[bytes, bytes] = await self._client.hgetall(self.keys.weights)  # type: ignore[assignment]
        if not fields:
            return None
        try:
            version = int(fields[b"version"])
            fingerprint = fields[b"fingerprint"].decode()
            sha = fields[b"sha256"].decode()
            payload = bytes(fields[b"payload"])
        except (KeyError, ValueError) as exc:
            log.error(
                "stored weights are incomplete, ignoring them", extra={"key": self.keys.weights, "error": repr(exc)}
            )
            return None
        if hashlib.sha256(payload).hexdigest() != sha:
            log.error("stored weights fail their sha256, ignoring them", extra={"version": version})
            return None
        self.saved_version = version
        return await asyncio.to_thread(WeightVersion.build, version, fingerprint, payload, self.chunk_bytes, sha256=sha)

    async def try_load(self, store: LatestStore) -> bool:
        """One attempt to load into ``store``; False when Redis did not answer."""
        try:
            loaded = await self.load()
        except TRANSIENT_ERRORS as exc:
            log.warning("redis unreachable at start, serving from memory", extra={"error": repr(exc)})
            return False
        if loaded is not None and store.adopt(loaded):
            log.info("serving weights stored in redis", extra={"version": loaded.version, "bytes": len(loaded.payload)})
        return True

    async def run(self, store: LatestStore, loaded: bool) -> None:
        """Background task: finish loading if the first attempt failed, then persist each newer version."""
        while not loaded and not self._stop.is_set():
            await self._backoff.sleep_async(self._stop)
            loaded = await self.try_load(store)
        self._backoff.reset()
        while not self._stop.is_set():
            if await store.wait_newer(self.saved_version) is None:
                return
            # Subscribers first: the write (CPU here and in redis-server) would compete with the fan-out
            # of the same version. Whatever is newest after the delay is written; ones in between never are.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.delay_s)
            latest = store.latest
            if latest is None or self._stop.is_set():
                return
            try:
                await self._write(latest)
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "redis unreachable, weights kept in memory only; retrying",
                    extra={"version": latest.version, "error": repr(exc), "retry_within_s": self._backoff.ceiling()},
                )
                await self._backoff.sleep_async(self._stop)
                continue
            self._backoff.reset()

    async def flush(self, store: LatestStore, timeout_s: float) -> None:
        """At shutdown (after ``run`` was cancelled): store the latest version if it is not yet."""
        latest = store.latest
        if latest is None or latest.version <= self.saved_version:
            return
        try:
            await asyncio.wait_for(self._write(latest), timeout_s)
        except _FLUSH_ERRORS as exc:
            log.warning(
                "latest weights not stored in redis at shutdown", extra={"version": latest.version, "error": repr(exc)}
            )

    async def _write(self, version: WeightVersion) -> None:
        args: list[bytes | str | int] = [version.version, version.fingerprint, version.sha256, version.payload]
        await asyncio.to_thread(self._save, [self.keys.weights], args)
        self.saved_version = version.version

    async def close(self) -> None:
        self._stop.set()
        await self._client.aclose()
        self._writer.close()
