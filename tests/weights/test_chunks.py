"""Chunking and chunk checks (impala.weights.chunks), both ends of the wire."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from impala.weights.chunks import MAX_CHUNK_BYTES, Assembler, RejectedError, WeightVersion, split
from impala.weights.v1 import weights_pb2

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes


def test_split_and_assemble_round_trip() -> None:
    chunks = list(split(3, "fp", PAYLOAD, 4096))
    assert [(c.index, c.count, len(c.data)) for c in chunks] == [(0, 3, 4096), (1, 3, 4096), (2, 3, 2048)]
    assembler = Assembler(max_version_bytes=1 << 20)
    assert assembler.add(chunks[0]) is None
    assert assembler.add(chunks[1]) is None
    done = assembler.add(chunks[2])
    assert done is not None
    assert (done.version, done.fingerprint, done.payload) == (3, "fp", PAYLOAD)
    assert done.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_empty_payload_is_one_chunk() -> None:
    (chunk,) = split(1, "fp", b"")
    done = Assembler(1024).add(chunk)
    assert done is not None
    assert done.payload == b""


def test_built_version_serializes_each_chunk_once() -> None:
    version = WeightVersion.build(2, "fp", PAYLOAD, 4096)
    parsed = [weights_pb2.WeightChunk.FromString(w) for w in version.wire]
    assert b"".join(c.data for c in parsed) == PAYLOAD
    assert {c.sha256 for c in parsed} == {version.sha256}


def _assemble(chunks: list[weights_pb2.WeightChunk], max_bytes: int) -> None:
    assembler = Assembler(max_bytes)
    for chunk in chunks:
        assembler.add(chunk)
    assembler.check_complete()


def _reject(chunks: list[weights_pb2.WeightChunk], max_bytes: int = 1 << 20) -> RejectedError:
    with pytest.raises(RejectedError) as info:
        _assemble(chunks, max_bytes)
    return info.value


def test_corrupted_chunk_is_data_loss() -> None:
    chunks = list(split(1, "fp", PAYLOAD, 4096))
    chunks[1].data = b"\xff" + chunks[1].data[1:]
    error = _reject(chunks)
    assert (error.code, error.reason) == (grpc.StatusCode.DATA_LOSS, "checksum")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.reverse(), "first chunk has index 2"),
        (lambda c: c.__setitem__(slice(1, 3), [c[2], c[1]]), "out of order"),
        (lambda c: c.pop(), "stream ended after 2 of 3"),
        (lambda c: c.append(c[2]), "after the last"),
        (lambda c: setattr(c[1], "version", 9), "differs from the first"),
        (lambda c: setattr(c[1], "fingerprint", "other"), "another fingerprint"),
        (lambda c: setattr(c[0], "fingerprint", ""), "no fingerprint"),
        (lambda c: setattr(c[0], "sha256", "abc"), "64 lowercase hex"),
        (lambda c: setattr(c[0], "count", 10241), "cannot carry"),
        (lambda c: setattr(c[2], "data", c[2].data + b"x"), "more than total_bytes"),
    ],
)
def test_malformed_streams_are_invalid_argument(mutate: object, message: str) -> None:
    chunks = list(split(1, "fp", PAYLOAD, 4096))
    mutate(chunks)  # type: ignore[operator]
    error = _reject(chunks)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(error)


def test_limits() -> None:
    assert _reject(list(split(1, "fp", PAYLOAD, 4096)), max_bytes=10_000).reason == "too_large"
    (big,) = split(1, "fp", b"")
    big.data, big.total_bytes = b"x" * (MAX_CHUNK_BYTES + 1), MAX_CHUNK_BYTES + 1
    big.count = 2
    assert "more than 4194304" in str(_reject([big], max_bytes=1 << 30))
    assert _reject([]).code == grpc.StatusCode.INVALID_ARGUMENT
