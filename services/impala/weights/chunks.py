"""Cutting a weight version into ``WeightChunk`` messages and checking chunks back into a version.

Used on both ends: the service checks what a learner publishes, a subscriber checks what it
receives. A chunk stream carries one version: chunks ``0..count-1`` in order, each at most 4 MiB, the
same header (version, count, total_bytes; fingerprint and sha256 on the first chunk, empty or equal
on the others) and the SHA-256 of the whole payload.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from impala.weights.v1 import weights_pb2

MAX_CHUNK_BYTES = 4 * 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class RejectedError(ValueError):
    """A version that cannot be accepted. ``code`` is the gRPC status to answer with, ``reason`` the
    ``impala_weights_rejected_total`` label (malformed, too_large, checksum, stale, fingerprint)."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class WeightVersion:
    """One complete, checked version. ``wire`` holds its chunks serialized once, to be written as
    they are to every subscriber."""

    version: int
    fingerprint: str
    sha256: str
    payload: bytes
    wire: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def build(
        cls, version: int, fingerprint: str, payload: bytes, chunk_bytes: int = MAX_CHUNK_BYTES, *, sha256: str = ""
    ) -> WeightVersion:
        """Serialize the chunks once; ``sha256`` when already known (the service checked it)."""
        sha = sha256 or hashlib.sha256(payload).hexdigest()
        chunks = split(version, fingerprint, payload, chunk_bytes, sha256=sha)
        return cls(version, fingerprint, sha, payload, tuple(c.SerializeToString() for c in chunks))


def split(
    version: int, fingerprint: str, payload: bytes, chunk_bytes: int = MAX_CHUNK_BYTES, *, sha256: str = ""
) -> Iterator[weights_pb2.WeightChunk]:
    """The chunks of one version, made one at a time (at least one, even for an empty payload)."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
    sha = sha256 or hashlib.sha256(payload).hexdigest()
    view = memoryview(payload)
    count = max(1, -(-len(payload) // chunk_bytes))
    for i in range(count):
        yield weights_pb2.WeightChunk(
            version=version,
            fingerprint=fingerprint,
            index=i,
            count=count,
            data=bytes(view[i * chunk_bytes : (i + 1) * chunk_bytes]),
            total_bytes=len(payload),
            sha256=sha,
        )


class Assembler:
    """Checks the chunks of one version as they arrive and returns the version with the last one."""

    def __init__(self, max_version_bytes: int) -> None:
        self.max_version_bytes = max_version_bytes
        self.first: weights_pb2.WeightChunk | None = None
        self.parts: list[bytes] = []
        self.raws: list[bytes] = []
        self.received = 0
        self._hash = hashlib.sha256()

    @property
    def started(self) -> bool:
        return self.first is not None

    def add(self, chunk: weights_pb2.WeightChunk, raw: bytes | None = None) -> WeightVersion | None:
        """Take the next chunk; the checked version once it was the last. Raises ``RejectedError``.

        ``raw`` is the chunk as it came off the wire; when every chunk has it, the version's ``wire``
        is these bytes, so a relay forwards them without serializing anything again.
        """
        if self.first is None:
            self._check_first(chunk)
            self.first = chunk
        else:
            self._check_next(self.first, chunk)
        if len(chunk.data) > MAX_CHUNK_BYTES:
            raise _malformed(f"chunk {chunk.index} has {len(chunk.data)} bytes, more than {MAX_CHUNK_BYTES}")
        self.received += len(chunk.data)
        if self.received > self.first.total_bytes:
            raise _malformed(f"chunks carry more than total_bytes={self.first.total_bytes}")
        self.parts.append(chunk.data)
        if raw is not None:
            self.raws.append(raw)
        self._hash.update(chunk.data)
        if chunk.index + 1 < self.first.count:
            return None
        return self._finish(self.first)

    def _check_first(self, chunk: weights_pb2.WeightChunk) -> None:
        if chunk.index != 0:
            raise _malformed(f"first chunk has index {chunk.index}, expected 0")
        check_header(chunk, self.max_version_bytes)
        least = max(1, -(-chunk.total_bytes // MAX_CHUNK_BYTES))
        if not least <= chunk.count <= max(1, chunk.total_bytes):
            raise _malformed(f"count={chunk.count} cannot carry total_bytes={chunk.total_bytes} in 4 MiB chunks")

    def _check_next(self, first: weights_pb2.WeightChunk, chunk: weights_pb2.WeightChunk) -> None:
        if len(self.parts) >= first.count:
            raise _malformed(f"chunk {chunk.index} after the last of {first.count} chunks")
        if chunk.index != len(self.parts):
            raise _malformed(f"chunk index {chunk.index} out of order, expected {len(self.parts)}")
        if (chunk.version, chunk.count, chunk.total_bytes) != (first.version, first.count, first.total_bytes):
            raise _malformed(
                f"chunk {chunk.index} header (version={chunk.version}, count={chunk.count}, "
                f"total_bytes={chunk.total_bytes}) differs from the first chunk's "
                f"(version={first.version}, count={first.count}, total_bytes={first.total_bytes})"
            )
        if chunk.fingerprint not in ("", first.fingerprint) or chunk.sha256 not in ("", first.sha256):
            raise _malformed(f"chunk {chunk.index} names another fingerprint or sha256 than the first chunk")

    def _finish(self, first: weights_pb2.WeightChunk) -> WeightVersion:
        if self.received != first.total_bytes:
            raise _malformed(f"chunks carry {self.received} bytes, total_bytes says {first.total_bytes}")
        digest = self._hash.hexdigest()
        if digest != first.sha256:
            raise RejectedError(
                grpc.StatusCode.DATA_LOSS,
                "checksum",
                f"sha256 of the assembled version {first.version} is {digest}, chunks announced {first.sha256}",
            )
        payload = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        wire = tuple(self.raws) if len(self.raws) == len(self.parts) else ()
        return WeightVersion(first.version, first.fingerprint, digest, payload, wire=wire)

    def check_complete(self) -> None:
        """Call when the stream ended: raises if chunks are missing."""
        if self.first is None:
            raise _malformed("stream ended without any chunk")
        if len(self.parts) == self.first.count:
            return
        raise _malformed(f"stream ended after {len(self.parts)} of {self.first.count} chunks")


def check_header(chunk: weights_pb2.WeightChunk, max_version_bytes: int) -> None:
    """The version's header fields of a first chunk (or a bulk announcement); raises ``RejectedError``."""
    if chunk.version < 1:
        raise _malformed(f"version must be >= 1, got {chunk.version}")
    if not chunk.fingerprint:
        raise _malformed("first chunk has no fingerprint")
    if not _SHA256_HEX.match(chunk.sha256):
        raise _malformed("first chunk's sha256 is not 64 lowercase hex digits")
    if chunk.total_bytes > max_version_bytes:
        raise RejectedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "too_large",
            f"version of {chunk.total_bytes} bytes exceeds max_version_bytes={max_version_bytes}",
        )


def _malformed(message: str) -> RejectedError:
    return RejectedError(grpc.StatusCode.INVALID_ARGUMENT, "malformed", message)
