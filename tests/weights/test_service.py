"""The weight service over real gRPC on loopback: fan-out, latest wins, refusals, auth."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from impala.core.redis_server import RedisServer
from impala.weights.chunks import split
from impala.weights.publisher import PublishRefusedError, WeightPublisher
from impala.weights.v1 import weights_pb2, weights_pb2_grpc

from .harness import TOKEN, running_service, subscriber, take

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def publisher(port: int, token: str = TOKEN) -> WeightPublisher:
    return WeightPublisher(f"127.0.0.1:{port}", token=token, chunk_bytes=1024 * 1024)


async def test_every_subscriber_gets_every_version_it_keeps_up_with(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url, chunk_bytes=512 * 1024) as (service, registry):
        subs = [subscriber(service, subscriber_id=f"pool-{i}") for i in range(3)]
        pub = publisher(service.port)
        try:
            v1 = os.urandom(3 * 1024 * 1024 + 17)  # several chunks each way, the last one short
            await asyncio.to_thread(pub.publish, 1, "fp-a", v1)
            first = await asyncio.gather(*(take(s, 1) for s in subs))
            assert [[(u.version, u.fingerprint, u.payload) for u in got] for got in first] == [[(1, "fp-a", v1)]] * 3

            waiting = [asyncio.create_task(take(s, 1)) for s in subs]  # resume with after_version=1
            v2 = os.urandom(1000)
            await asyncio.to_thread(pub.publish, 2, "fp-a", v2)
            second = await asyncio.gather(*waiting)
            assert [[(u.version, u.payload) for u in got] for got in second] == [[(2, v2)]] * 3
        finally:
            pub.close()
            for s in subs:
                await s.close()
        assert registry.get_sample_value("impala_weights_version") == 2
        assert registry.get_sample_value("impala_weights_bytes") == 1000
        assert registry.get_sample_value("impala_weights_publish_total") == 2
        assert registry.get_sample_value("impala_weights_sent_total") == 6


@pytest.mark.parametrize("bulk", [True, False])
async def test_slow_subscriber_skips_to_the_newest(redis_server: RedisServer, bulk: bool) -> None:
    async with running_service(redis_server.url) as (service, _):
        sub, pub = subscriber(service, bulk=bulk), publisher(service.port)
        updates = sub.updates()
        try:
            await asyncio.to_thread(pub.publish, 1, "fp-a", os.urandom(2_000_000))
            seen = [(await anext(updates)).version]
            # The subscriber stalls while 11 more 2 MB versions arrive: far more than the socket and
            # HTTP/2 windows buffer (~6 MB measured), so the service must skip some for it. In bulk
            # mode the announcements are buffered, and the data plane answers GONE for all but the newest.
            for version in range(2, 13):
                await asyncio.to_thread(pub.publish, version, "fp-a", os.urandom(2_000_000))
            while seen[-1] != 12:
                seen.append((await asyncio.wait_for(anext(updates), 10)).version)
        finally:
            await updates.aclose()
            await sub.close()
            pub.close()
    assert seen == sorted(set(seen))
    assert len(seen) < 12


async def test_new_subscriber_gets_the_current_version_at_once(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, _):
        pub = publisher(service.port)
        for version in (1, 2, 3):
            await asyncio.to_thread(pub.publish, version, "fp-a", b"v%d" % version)
        late, current = subscriber(service), subscriber(service, after_version=3)
        try:
            assert [(u.version, u.payload) for u in await take(late, 1)] == [(3, b"v3")]
            waiting = asyncio.create_task(take(current, 1))  # already has 3: nothing until 4
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await asyncio.to_thread(pub.publish, 4, "fp-a", b"v4")
            assert [u.version for u in await waiting] == [4]
        finally:
            pub.close()
            await late.close()
            await current.close()


async def test_corrupted_chunk_is_refused_with_data_loss(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, registry):
        chunks = list(split(1, "fp-a", os.urandom(10_000), 4096))
        chunks[1].data = bytes(b ^ 0xFF for b in chunks[1].data[:1]) + chunks[1].data[1:]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Publish(_aiter(chunks), metadata=AUTH)
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert "sha256" in (info.value.details() or "")
        assert service.store.latest is None
        assert registry.get_sample_value("impala_weights_rejected_total", {"reason": "checksum"}) == 1


async def test_malformed_publish_is_invalid_argument(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url, max_version_bytes=4096) as (service, registry):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            for chunks in (list(split(1, "fp-a", b"x" * 5000, 1024)), list(split(1, "fp-a", b"x" * 3000, 1024))[1:]):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Publish(_aiter(chunks), metadata=AUTH)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert registry.get_sample_value("impala_weights_rejected_total", {"reason": "too_large"}) == 1
        assert registry.get_sample_value("impala_weights_rejected_total", {"reason": "malformed"}) == 1


async def test_stale_and_foreign_versions_are_refused(redis_server: RedisServer) -> None:
    async with running_service(redis_server.url) as (service, registry):
        pub = publisher(service.port)
        try:
            await asyncio.to_thread(pub.publish, 5, "fp-a", b"five")
            await asyncio.to_thread(pub.publish, 5, "fp-a", b"five")  # a retried publish that got through
            with pytest.raises(PublishRefusedError) as stale:
                await asyncio.to_thread(pub.publish, 4, "fp-a", b"four")
            assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "stale version 4" in stale.value.details
            assert stale.value.current_version == 5
            with pytest.raises(PublishRefusedError, match="stale version 5"):
                await asyncio.to_thread(pub.publish, 5, "fp-a", b"other five")

            with pytest.raises(PublishRefusedError) as foreign:
                await asyncio.to_thread(pub.publish, 6, "fp-b", b"six")
            assert foreign.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "'fp-b'" in foreign.value.details
            assert "'fp-a'" in foreign.value.details
        finally:
            pub.close()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            call = stub.Subscribe(weights_pb2.SubscribeRequest(fingerprint="fp-b"), metadata=AUTH)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'fp-b'" in (info.value.details() or "")
        assert service.store.latest is not None
        assert (service.store.latest.version, service.store.latest.payload) == (5, b"five")
        assert registry.get_sample_value("impala_weights_rejected_total", {"reason": "stale"}) == 3
        assert registry.get_sample_value("impala_weights_rejected_total", {"reason": "fingerprint"}) == 2


@pytest.mark.parametrize("token", ["", "wrong-token-0123456789"])
async def test_calls_without_the_token_are_unauthenticated(redis_server: RedisServer, token: str) -> None:
    async with running_service(redis_server.url) as (service, _):
        pub = WeightPublisher(f"127.0.0.1:{service.port}", token=token)
        try:
            with pytest.raises(PublishRefusedError) as info:
                await asyncio.to_thread(pub.publish, 1, "fp-a", b"w")
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        finally:
            pub.close()
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            call = weights_pb2_grpc.WeightServiceStub(channel).Subscribe(
                weights_pb2.SubscribeRequest(), metadata=metadata
            )
            with pytest.raises(grpc.aio.AioRpcError) as sub_info:
                await call.read()
        assert sub_info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert service.store.latest is None


async def _aiter(chunks: list[weights_pb2.WeightChunk]) -> AsyncIterator[weights_pb2.WeightChunk]:
    for chunk in chunks:
        yield chunk
