"""Fixtures with real parts: a real redis-server per test, gRPC servers on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from impala.core.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, persistence off, stopped by PID afterwards."""
    server = RedisServer(workdir=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()
