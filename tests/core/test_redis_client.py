"""Multi-MB payloads must reach the socket as the caller's own buffer, not a hiredis-packed copy."""

from __future__ import annotations

from typing import Any

import redis
import redis.connection

from impala.core import redis_client
from impala.core.redis_client import BUFFER_CUTOFF, async_client, sync_client

PAYLOAD = b"\x01" * (4 * 1024 * 1024)
XADD = ("XADD", "impala:{t}:rollouts", "*", "r", PAYLOAD)


def _holds_payload_by_identity(pieces: list[bytes]) -> bool:
    return any(piece is PAYLOAD for piece in pieces)


def test_sync_client_packs_big_values_as_separate_buffers() -> None:
    conn: Any = sync_client("redis://127.0.0.1:1/0").connection_pool.make_connection()
    assert isinstance(conn._command_packer, redis.connection.PythonRespSerializer)
    assert _holds_payload_by_identity(conn.pack_command(*XADD))
    assert _holds_payload_by_identity(conn.pack_commands([("MULTI",), XADD, ("XLEN", "k"), ("EXEC",)]))
    small = conn.pack_command("XADD", "k", "*", "r", b"x" * 100)
    assert len(small) == 1  # small commands still go out as one buffer


def test_async_client_packs_big_values_as_separate_buffers() -> None:
    pool: Any = async_client("redis://127.0.0.1:1/0").connection_pool
    conn = pool.make_connection()
    assert _holds_payload_by_identity(conn.pack_command(*XADD))
    assert _holds_payload_by_identity(conn.pack_commands([("MULTI",), XADD, ("XLEN", "k"), ("EXEC",)]))
    assert conn._buffer_cutoff == BUFFER_CUTOFF


def test_sync_client_avoids_hiredis_packer_but_parses_with_hiredis() -> None:
    """hiredis is a pinned dependency (its reply parser is C); a plain client would pack commands with
    hiredis.pack_command, which copies every argument."""
    assert redis_client.HIREDIS_AVAILABLE
    plain: Any = redis.Redis.from_url("redis://127.0.0.1:1/0").connection_pool.make_connection()
    assert isinstance(plain._command_packer, redis.connection.HiredisRespSerializer)
    ours: Any = sync_client("redis://127.0.0.1:1/0").connection_pool.make_connection()
    assert isinstance(ours._command_packer, redis.connection.PythonRespSerializer)
    assert _holds_payload_by_identity(ours.pack_command(*XADD))
    assert isinstance(ours._parser, redis._parsers.hiredis._HiredisParser)
