"""Failures: reconnect with backoff on retryable statuses, give up on fatal ones, stop while held, TLS."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme

from impala.client import ClientError, ClientSettings, EnvClient, SimulatorBatch, UnreachableError
from impala.core.backoff import Backoff
from tests.client.scripted_pool import Counter, ScriptedPool, decode, eventually, serving


class RecordingBackoff(Backoff):
    """A seeded backoff that remembers each delay and the ceiling it was drawn under."""

    def __init__(self) -> None:
        super().__init__(base_s=0.01, cap_s=0.04, rng=random.Random(0))
        self.drawn: list[tuple[float, float]] = []

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        delay = super().next_delay()
        self.drawn.append((delay, ceiling))
        return delay


def batch(num_envs: int = 2) -> SimulatorBatch:
    return SimulatorBatch([Counter(i, (100,), (True,)) for i in range(num_envs)])


async def test_retryable_statuses_reconnect_with_capped_backoff(caplog: pytest.LogCaptureFixture) -> None:
    codes = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    pool = ScriptedPool(refusals=[(code, f"scripted {code.name}") for code in codes])
    backoff = RecordingBackoff()
    caplog.set_level(logging.WARNING, logger="impala.client.client")
    async with serving(pool) as port:
        stats = await EnvClient(
            batch(), ClientSettings(address=f"127.0.0.1:{port}", max_steps=4), backoff=backoff
        ).run()
    assert stats.env_steps == 4
    assert stats.failures == 6
    assert stats.streams == 1
    assert len(pool.streams) == 7
    assert [c for _, c in backoff.drawn] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]  # doubles, then capped
    assert all(0 <= d <= c for d, c in backoff.drawn)
    assert backoff.failures == 0  # a full exchange resets the backoff
    failures = [r for r in caplog.records if r.getMessage().startswith("stream failed")]
    assert [r.code for r in failures] == [c.name for c in codes]  # type: ignore[attr-defined]  # one line each


async def test_broken_stream_resets_every_env_before_redialing() -> None:
    pool = ScriptedPool(break_after={0: 3})
    async with serving(pool) as port:
        stats = await EnvClient(
            batch(), ClientSettings(address=f"127.0.0.1:{port}", backoff_base_s=0.01, max_steps=2 * 5)
        ).run()
    assert stats.failures == 1
    assert stats.streams == 2
    broken, fresh = pool.streams
    assert len(broken.steps) == 4
    assert not broken.half_closed
    first = decode(fresh.steps[0].observation)
    assert first[:, :2].tolist() == [[1, 0], [1, 0]]  # new episodes (episode 1, t 0) for both envs
    assert fresh.messages[0].WhichOneof("kind") == "hello"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT],
)
async def test_fatal_statuses_are_not_retried(code: grpc.StatusCode) -> None:
    pool = ScriptedPool(refusals=[(code, "scripted refusal naming the field")] * 3)
    async with serving(pool) as port:
        with pytest.raises(ClientError, match="scripted refusal naming the field") as info:
            await EnvClient(batch(), ClientSettings(address=f"127.0.0.1:{port}", backoff_base_s=0.01)).run()
    assert info.value.code == code
    assert len(pool.streams) == 1


async def test_a_message_over_the_size_limit_is_not_retried() -> None:
    pool = ScriptedPool()
    async with serving(pool, max_message_bytes=1024) as port:  # 100 envs x 16 bytes does not fit
        with pytest.raises(ClientError, match="larger than max") as info:
            await EnvClient(batch(100), ClientSettings(address=f"127.0.0.1:{port}", backoff_base_s=0.01)).run()
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(pool.streams) == 1


async def test_unreachable_pool_is_retried_until_stopped() -> None:
    stop = asyncio.Event()
    client = EnvClient(
        batch(), ClientSettings(address="127.0.0.1:1", backoff_base_s=0.01, backoff_max_s=0.02, connect_attempts=0)
    )
    task = asyncio.create_task(client.run(stop))
    await eventually(lambda: client.stats.failures >= 3)
    stop.set()
    stats = await task
    assert stats.streams == 0
    assert stats.failures >= 3


async def test_stop_while_the_pool_holds_its_reply_cancels_after_grace() -> None:
    pool = ScriptedPool()
    stop = asyncio.Event()
    async with serving(pool) as port:
        client = EnvClient(batch(), ClientSettings(address=f"127.0.0.1:{port}", stop_grace_s=0.05))
        task = asyncio.create_task(client.run(stop))
        await eventually(lambda: pool.steps_seen >= 3)
        pool.hold.set()  # like a paused pool: the reply to the next Step never comes
        await asyncio.sleep(0.05)
        seen = pool.steps_seen
        stop.set()
        stats = await asyncio.wait_for(task, 10)
        # Counted before the hold is lifted: the pool's handler may still be polling the hold then, and
        # would record the reply it can no longer send.
        [stream] = pool.streams
        answered, sent = len(stream.actions), len(stream.steps)
        pool.hold.clear()
    assert stats.failures == 0
    assert len(pool.streams) == 1
    assert pool.steps_seen == seen
    assert answered == sent - 1


async def test_stop_finishes_the_exchange_and_half_closes() -> None:
    pool = ScriptedPool()
    stop = asyncio.Event()
    async with serving(pool) as port:
        task = asyncio.create_task(EnvClient(batch(), ClientSettings(address=f"127.0.0.1:{port}")).run(stop))
        await eventually(lambda: pool.steps_seen >= 5)
        stop.set()
        stats = await asyncio.wait_for(task, 10)
        await asyncio.sleep(0.05)  # let the handler see the half-close
    [stream] = pool.streams
    assert stream.half_closed
    assert len(stream.actions) == len(stream.steps)  # every Step got its Actions before the close
    assert stats.env_steps == 2 * (len(stream.steps) - 1)


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    cert = ca.issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(blob.bytes() for blob in cert.cert_chain_pems))]
    )
    pool = ScriptedPool()
    async with serving(pool, credentials=credentials) as port:
        config = ClientSettings(
            address=f"localhost:{port}", tls_ca=tmp_path / "ca.crt", token="tls-token-1234", max_steps=6
        )
        stats = await EnvClient(batch(), config).run()
        # A client that does not trust the CA never gets a Welcome.
        stop = asyncio.Event()
        untrusting = EnvClient(batch(), ClientSettings(address=f"localhost:{port}", tls=True, backoff_base_s=0.01))
        task = asyncio.create_task(untrusting.run(stop))
        await eventually(lambda: untrusting.stats.failures >= 1)
        stop.set()
        await task
    assert stats.env_steps == 6
    assert untrusting.stats.streams == 0
    assert pool.streams[0].metadata["authorization"] == "Bearer tls-token-1234"
    assert np.asarray(decode(pool.streams[0].steps[0].observation)).shape == (2, 4)


async def test_attempts_are_bounded_only_before_the_first_welcome() -> None:
    unavailable = (grpc.StatusCode.UNAVAILABLE, "scripted: no pool yet")
    pool = ScriptedPool(refusals=[unavailable] * 3)
    async with serving(pool) as port:
        config = ClientSettings(
            address=f"127.0.0.1:{port}", backoff_base_s=0.01, backoff_max_s=0.02, connect_attempts=3
        )
        with pytest.raises(UnreachableError, match="after 3 attempts") as info:
            await EnvClient(batch(), config).run()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(pool.streams) == 3
    # Welcomed once, the same client rides out more failures than connect_attempts allows before it.
    pool = ScriptedPool(break_after={0: 2, 1: 2, 2: 2, 3: 2})
    async with serving(pool) as port:
        config = ClientSettings(
            address=f"127.0.0.1:{port}", backoff_base_s=0.01, backoff_max_s=0.02, connect_attempts=1, max_steps=2 * 10
        )
        stats = await EnvClient(batch(), config).run()
    assert stats.failures == 4 > config.connect_attempts
    assert stats.env_steps == 20
