"""The bulk data plane over real sockets: announcements, fetches, refusals, limits, and the
subscriber's fallback to gRPC chunks when the bytes it fetched are wrong."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from prometheus_client import CollectorRegistry

from impala.core.redis_server import RedisServer
from impala.weights import bulk_client, bulk_wire
from impala.weights.chunks import WeightVersion
from impala.weights.server import WeightService
from impala.weights.subscriber import WeightSubscriber, WeightUpdate
from impala.weights.v1 import weights_pb2, weights_pb2_grpc
from tests.support import wait_for

from .harness import TOKEN, running_service, subscriber, take

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def commit(service: WeightService, version: int, payload: bytes) -> None:
    service.store.commit(WeightVersion.build(version, "fp-a", payload, service.settings.chunk_bytes))


def refused(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("impala_weights_bulk_refused_total", {"reason": reason}) or 0.0


async def until(probe: Callable[[], object], what: str) -> None:
    """``tests.support.wait_for`` off the loop, so the service keeps running meanwhile."""
    await asyncio.to_thread(wait_for, probe, timeout_s=10.0, what=what)


def watched(
    service: WeightService, **options: float
) -> tuple[WeightSubscriber, list[str], AsyncIterator[WeightUpdate]]:
    """A subscriber, the list its fallbacks to chunks append their reasons to, and its updates."""
    sub = subscriber(service, **options)
    fallbacks: list[str] = []
    sub.on_bulk_fallback = fallbacks.append
    return sub, fallbacks, sub.updates()


async def first_message(service: WeightService, *, bulk_requested: bool) -> weights_pb2.WeightChunk:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        call = weights_pb2_grpc.WeightServiceStub(channel).Subscribe(
            weights_pb2.SubscribeRequest(fingerprint="fp-a", bulk=bulk_requested), metadata=AUTH
        )
        message = await call.read()
        call.cancel()
    assert isinstance(message, weights_pb2.WeightChunk)
    return message


async def test_bulk_subscribers_get_an_announcement_and_old_ones_the_chunks(redis_server: RedisServer) -> None:
    payload = os.urandom(100_000)
    async with running_service(redis_server.url, chunk_bytes=64 * 1024) as (service, _):
        commit(service, 1, payload)
        assert service.bulk is not None
        announcement = await first_message(service, bulk_requested=True)
        assert (announcement.version, announcement.count, announcement.data) == (1, 0, b"")
        assert (announcement.total_bytes, announcement.bulk_port) == (len(payload), service.bulk.port)
        assert announcement.sha256 == service.store.latest.sha256  # type: ignore[union-attr]

        chunk = await first_message(service, bulk_requested=False)
        assert (chunk.index, chunk.count, chunk.bulk_port, chunk.data) == (0, 2, 0, payload[: 64 * 1024])

        fetched = await bulk_client.fetch(
            "127.0.0.1", service.bulk.port, 1, TOKEN, total_bytes=len(payload), timeout_s=10
        )
        assert fetched == payload


@pytest.mark.parametrize("use_bulk", [True, False])
async def test_several_subscribers_hold_each_version_byte_exact(redis_server: RedisServer, use_bulk: bool) -> None:
    async with running_service(redis_server.url) as (service, registry):
        fallbacks: list[str] = []
        subs = [subscriber(service, subscriber_id=f"pool-{i}", bulk=use_bulk) for i in range(4)]
        for sub in subs:
            sub.on_bulk_fallback = fallbacks.append
        try:
            for version in (1, 2):
                payload = os.urandom(3_000_000 + version)
                waiting = [asyncio.create_task(take(s, 1)) for s in subs]
                commit(service, version, payload)
                got = await asyncio.gather(*waiting)
                assert [[(u.version, u.fingerprint, u.payload) for u in g] for g in got] == [
                    [(version, "fp-a", payload)]
                ] * 4
        finally:
            for sub in subs:
                await sub.close()
        assert fallbacks == []
        assert registry.get_sample_value("impala_weights_sent_total") == 8
        assert not any(refused(registry, r) for r in ("unauthenticated", "malformed", "busy", "disconnected"))


@pytest.mark.parametrize("token", ["", "wrong-token-0123456789"])
async def test_fetch_without_the_token_is_refused(redis_server: RedisServer, token: str) -> None:
    async with running_service(redis_server.url) as (service, registry):
        commit(service, 1, b"secret weights")
        assert service.bulk is not None
        with pytest.raises(bulk_client.FetchError) as info:
            await bulk_client.fetch("127.0.0.1", service.bulk.port, 1, token, total_bytes=14, timeout_s=10)
        assert info.value.status == bulk_wire.Status.UNAUTHENTICATED
        assert refused(registry, "unauthenticated") == 1
        assert registry.get_sample_value("impala_weights_sent_total") == 0


async def test_superseded_version_is_gone(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, registry):
        assert service.bulk is not None
        port = service.bulk.port
        with pytest.raises(bulk_client.FetchError) as nothing_yet:
            await bulk_client.fetch("127.0.0.1", port, 0, TOKEN, total_bytes=0, timeout_s=10)
        commit(service, 1, b"one")
        commit(service, 2, b"two")
        with pytest.raises(bulk_client.FetchError) as superseded:
            await bulk_client.fetch("127.0.0.1", port, 1, TOKEN, total_bytes=3, timeout_s=10)
        assert nothing_yet.value.status == superseded.value.status == bulk_wire.Status.GONE
        assert await bulk_client.fetch("127.0.0.1", port, 2, TOKEN, total_bytes=3, timeout_s=10) == b"two"
        assert refused(registry, "gone") == 2


async def test_slow_malformed_and_excess_connections_are_refused(redis_server: RedisServer) -> None:
    limits = {"bulk_max_connections": 1, "bulk_request_timeout_s": 0.2}
    async with running_service(redis_server.url, **limits) as (service, registry):
        commit(service, 1, b"one")
        assert service.bulk is not None
        address = ("127.0.0.1", service.bulk.port)
        silent_reader, silent = await asyncio.open_connection(*address)
        await until(lambda: len(service.bulk._connections) == 1, "the silent connection")  # type: ignore[union-attr]
        with pytest.raises(bulk_client.FetchError) as busy:
            await bulk_client.fetch(*address, 1, TOKEN, total_bytes=3, timeout_s=10)
        assert busy.value.status == bulk_wire.Status.BUSY
        assert await silent_reader.read() == b""  # dropped after the request timeout, without a response
        silent.close()
        assert refused(registry, "timeout") == 1
        garbage_reader, garbage = await asyncio.open_connection(*address)
        garbage.write(b"GET / HTTP/1.1\r\n\r\n")
        magic, status, _, _ = bulk_wire.RESPONSE.unpack(await garbage_reader.readexactly(bulk_wire.RESPONSE.size))
        garbage.close()
        assert (magic, status) == (bulk_wire.MAGIC, bulk_wire.Status.MALFORMED)
        long_token_reader, long_token = await asyncio.open_connection(*address)
        long_token.write(bulk_wire.REQUEST.pack(bulk_wire.PUSH_MAGIC, 0, bulk_wire.MAX_TOKEN_BYTES + 1))
        header = await long_token_reader.readexactly(bulk_wire.FRAME.size)  # a push request: refused as a frame
        long_token.close()
        assert bulk_wire.FRAME.unpack(header)[:2] == (bulk_wire.PUSH_MAGIC, bulk_wire.Status.MALFORMED)
        assert (refused(registry, "busy"), refused(registry, "malformed")) == (1, 2)
        assert await bulk_client.fetch(*address, 1, TOKEN, total_bytes=3, timeout_s=10) == b"one"  # still serving


@contextlib.asynccontextmanager
async def lying_data_plane(
    answer: Callable[[bytes], bytes], payloads: dict[int, bytes], *, stall: bool = False
) -> AsyncIterator[int]:
    """A data plane on its own socket that answers a push subscription with one frame, the newest of
    ``payloads`` under a header with its true length and sha256 but ``answer(payload)`` as the bytes,
    then closes (with ``stall``: once the subscriber has closed)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        magic, _, token_len = bulk_wire.REQUEST.unpack(await reader.readexactly(bulk_wire.REQUEST.size))
        await reader.readexactly(token_len)
        assert magic == bulk_wire.PUSH_MAGIC
        version = max(payloads)
        payload = payloads[version]
        writer.write(bulk_wire.frame_header(version, hashlib.sha256(payload).hexdigest(), "fp-a", len(payload)))
        writer.write(answer(payload))
        await writer.drain()
        if stall:
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def flip_one_byte(payload: bytes) -> bytes:
    return payload[:100] + bytes([payload[100] ^ 0xFF]) + payload[101:]


def cut_short(payload: bytes) -> bytes:
    return payload[: len(payload) // 2]


@pytest.mark.parametrize(
    ("answer", "stall", "reason"),
    [(flip_one_byte, False, "checksum"), (cut_short, False, "fetch"), (cut_short, True, "fetch")],
    ids=["corrupt", "cut", "stalled"],
)
async def test_wrong_bulk_bytes_fall_back_to_chunks(
    redis_server: RedisServer, answer: Callable[[bytes], bytes], stall: bool, reason: str
) -> None:
    payloads: dict[int, bytes] = {}
    liar = lying_data_plane(answer, payloads, stall=stall)
    async with running_service(redis_server.url) as (service, _), liar as liar_port:
        service.servicer.bulk_port = liar_port  # announcements now send subscribers to the liar
        # a frame begun and stalled for 0.3 s is given up
        sub, fallbacks, updates = watched(service, bulk_timeout_s=0.3)
        try:
            for version in (1, 2):
                payload = payloads[version] = os.urandom(1_000_000)
                commit(service, version, payload)
                update = await asyncio.wait_for(anext(updates), 10)
                assert (update.version, update.payload) == (version, payload)
        finally:
            await updates.aclose()
            await sub.close()
        assert fallbacks == [reason, reason]  # once per version: each new subscription tries bulk again


async def test_a_subscriber_that_stops_reading_is_cut_off(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url, bulk_send_timeout_s=0.3) as (service, registry):
        commit(service, 1, bytes(64 * 1024 * 1024))  # far more than the socket buffers hold
        assert service.bulk is not None
        _, writer = await asyncio.open_connection("127.0.0.1", service.bulk.port)
        writer.write(bulk_wire.request(1, TOKEN))  # ... and never reads
        await until(lambda: refused(registry, "send_timeout") == 1, "the send timeout")
        assert await bulk_client.fetch(
            "127.0.0.1", service.bulk.port, 1, TOKEN, total_bytes=64 * 1024 * 1024, timeout_s=30
        )
        writer.close()
        assert registry.get_sample_value("impala_weights_sent_total") == 1


async def fallbacks_taking_one_version(service: WeightService, bulk_port: int, **options: float) -> list[str]:
    """Announce ``bulk_port`` as the data plane, commit a version, check that a subscriber still gets
    it byte-exact, and return the reasons of its fallbacks to chunks."""
    service.servicer.bulk_port = bulk_port
    sub, fallbacks, updates = watched(service, **options)
    try:
        payload = os.urandom(100_000)
        commit(service, 1, payload)
        update = await asyncio.wait_for(anext(updates), 10)
        assert (update.version, update.payload) == (1, payload)
    finally:
        await updates.aclose()
        await sub.close()
    return fallbacks


async def test_an_announcement_naming_no_tcp_port_falls_back_to_chunks(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        # a broken or hostile service: not a TCP port
        assert await fallbacks_taking_one_version(service, 70_000) == ["malformed"]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, str, str, bytes]:
    """(status, version, sha256, fingerprint, payload) of one pushed frame, read as a client in any
    language would (docs/protocol.md §12)."""
    magic, status, version, length, sha, fp_len = bulk_wire.FRAME.unpack(await reader.readexactly(bulk_wire.FRAME.size))
    assert magic == bulk_wire.PUSH_MAGIC
    fingerprint = (await reader.readexactly(fp_len)).decode()
    return status, version, sha.hex(), fingerprint, await reader.readexactly(length)


async def test_a_push_connection_carries_each_new_version_until_the_subscriber_leaves(
    redis_server: RedisServer,
) -> None:
    async with running_service(redis_server.url) as (service, registry):
        assert service.bulk is not None
        commit(service, 1, b"first")
        reader, writer = await asyncio.open_connection("127.0.0.1", service.bulk.port)
        writer.write(bulk_wire.request(0, TOKEN, push=True))
        frames = [await read_frame(reader)]  # the current version at once
        for version in (2, 3):
            payload = os.urandom(200_000)
            commit(service, version, payload)
            frames.append(await read_frame(reader))
        assert [f[:2] for f in frames] == [(bulk_wire.Status.OK, 1), (bulk_wire.Status.OK, 2), (bulk_wire.Status.OK, 3)]
        assert all(hashlib.sha256(payload).hexdigest() == sha for _, _, sha, _, payload in frames)
        assert {f[3] for f in frames} == {"fp-a"} and frames[0][4] == b"first"
        assert len(service.bulk._connections) == 1  # one connection for all three
        assert registry.get_sample_value("impala_weights_subscribers") == 1
        writer.close()
        await until(lambda: registry.get_sample_value("impala_weights_subscribers") == 0, "the subscriber leaving")
        await until(lambda: not service.bulk._connections, "the push task ending")  # type: ignore[union-attr]
        assert registry.get_sample_value("impala_weights_sent_total") == 3
        assert not any(refused(registry, r) for r in ("disconnected", "send_timeout"))


async def push_to(service: WeightService, *, after: int = 0, token: str = TOKEN) -> bulk_client.PushReceiver:
    """A push subscription to the service's data plane for versions newer than ``after`` (≤ 1 KiB)."""
    assert service.bulk is not None
    return await bulk_client.push_subscribe("127.0.0.1", service.bulk.port, after, token, max_bytes=1024, timeout_s=10)


async def test_a_push_subscription_skips_to_the_newest_and_waits_for_newer(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        assert service.bulk is not None
        for version in (1, 2, 3):
            commit(service, version, b"v%d" % version)
        receiver = await push_to(service, after=1)
        try:
            first = await asyncio.wait_for(receiver.next(10), 10)
            assert first is not None and (first.version, bytes(first.payload)) == (3, b"v3")
            nothing_newer = asyncio.create_task(receiver.next(10))
            await asyncio.sleep(0.2)
            assert not nothing_newer.done()
            commit(service, 4, b"v4")
            fourth = await asyncio.wait_for(nothing_newer, 10)
            assert fourth is not None and (fourth.version, bytes(fourth.payload)) == (4, b"v4")
        finally:
            receiver.close()


@pytest.mark.parametrize("token", ["", "wrong-token-0123456789"])
async def test_push_without_the_token_is_refused(redis_server: RedisServer, token: str) -> None:
    async with running_service(redis_server.url) as (service, registry):
        commit(service, 1, b"secret weights")
        receiver = await push_to(service, token=token)
        with pytest.raises(bulk_client.FetchError) as info:
            await asyncio.wait_for(receiver.next(10), 10)
        assert info.value.status == bulk_wire.Status.UNAUTHENTICATED
        assert refused(registry, "unauthenticated") == 1
        assert registry.get_sample_value("impala_weights_sent_total") == 0


async def test_a_pushed_version_larger_than_allowed_is_refused_by_the_subscriber(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        commit(service, 1, bytes(2048))
        receiver = await push_to(service)
        with pytest.raises(bulk_client.FetchError, match="2048 bytes, more than 1024") as info:
            await asyncio.wait_for(receiver.next(10), 10)
        assert info.value.reason == "too_large"  # the label of the subscriber's fallback


async def test_stopping_the_service_ends_push_subscriptions_cleanly(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        commit(service, 1, b"one")
        receiver = await push_to(service)
        first = await asyncio.wait_for(receiver.next(10), 10)
        assert first is not None and first.version == 1
        waiting = asyncio.create_task(receiver.next(10))
    assert await asyncio.wait_for(waiting, 10) is None  # closed between versions: resubscribe, no fallback


async def test_a_subscriber_follows_versions_on_one_push_connection_and_leaves_the_grpc_stream(
    redis_server: RedisServer,
) -> None:
    async with running_service(redis_server.url) as (service, registry):
        assert service.bulk is not None
        sub, fallbacks, updates = watched(service)
        connections: set[asyncio.Task[None]] = set()
        try:
            for version in (1, 2, 3):
                payload = os.urandom(500_000)
                commit(service, version, payload)
                update = await asyncio.wait_for(anext(updates), 10)
                assert (update.version, update.fingerprint, update.payload) == (version, "fp-a", payload)
                connections |= service.bulk._connections
                assert len(connections) == 1  # the same connection all along, not one per version
                # the push connection only: the Subscribe stream that announced the data plane has ended
                await until(lambda: registry.get_sample_value("impala_weights_subscribers") == 1, "one subscriber")
        finally:
            await updates.aclose()
            await sub.close()
        assert fallbacks == []


async def test_close_ends_updates_while_they_wait_for_a_push(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        assert service.bulk is not None
        sub, fallbacks, updates = watched(service)
        commit(service, 1, b"one")
        assert (await asyncio.wait_for(anext(updates), 10)).version == 1
        waiting = asyncio.create_task(anext(updates))  # following the push connection
        await asyncio.sleep(0.1)
        await sub.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 10)
        await until(lambda: not service.bulk._connections, "the push connection closed")  # type: ignore[union-attr]
        assert fallbacks == []  # closing is not a data-plane failure


async def test_push_connections_keep_alive_on_both_ends(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        commit(service, 1, b"one")
        receiver = await push_to(service)
        try:
            assert await asyncio.wait_for(receiver.next(10), 10) is not None
            assert receiver.transport is not None
            sock = receiver.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):  # Linux: probes after 20 s idle, not the kernel's 2 h
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 20
        finally:
            receiver.close()


async def test_a_data_plane_that_accepts_but_never_pushes_falls_back_to_chunks(redis_server: RedisServer) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the request, never answers
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with mute, running_service(redis_server.url) as (service, _):
        port = mute.sockets[0].getsockname()[1]
        assert await fallbacks_taking_one_version(service, port, bulk_timeout_s=0.3) == ["fetch"]
