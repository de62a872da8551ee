"""Fan-out benchmark: one weight version to N subscribers through the service vs a raw-socket fan-out.

Subscribers run in a child process (one event loop, N connections) and report when the last of them
holds the whole version; the server side runs here. Figures per N (median or min of ``rounds``):

- ``raw_s``: the same bytes written to N plain TCP sockets (the floor on this machine);
- ``fanout_s``: the service, from a version committed in memory to all N subscribers holding it,
  pushed over their data-plane connections (what ``WeightSubscriber`` does once subscribed, ADR 0013);
- ``publish_s``: the service end to end, from ``WeightPublisher.publish`` to all N holding it (pushed);
- ``chunked_s``: as ``fanout_s`` for subscribers that take the gRPC chunks (``bulk`` false).

Clients count bytes without decoding them, so the ratios measure the service.
``impala bench weights`` calls ``run`` and prints the table.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from impala.core import heap
from impala.core.redis_server import RedisServer
from impala.weights import bulk_client
from impala.weights.chunks import WeightVersion
from impala.weights.publisher import WeightPublisher
from impala.weights.server import build_weight_service
from impala.weights.settings import WeightsSettings
from impala.weights.v1 import weights_pb2

SUBSCRIBE = "/impala.weights.v1.WeightService/Subscribe"


def run(
    subscribers: tuple[int, ...] = (1, 4, 16), size_bytes: int = 6_400_000, rounds: int = 5, statistic: str = "median"
) -> list[dict[str, Any]]:
    """One row per subscriber count: seconds for raw, fanout, publish and chunked, and the ratios to raw.

    ``statistic`` is "median" or "min" (on a shared machine the minimum shows what the code can do).
    """
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be median or min, got {statistic!r}")
    stat: Callable[[list[float]], float] = min if statistic == "min" else statistics.median
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(workdir=Path(tmp)) as redis_server:
        for n in subscribers:
            raw = stat(asyncio.run(_raw(n, size_bytes, rounds)))
            times = asyncio.run(_service(n, size_bytes, rounds, redis_server.url))
            row: dict[str, Any] = {"subscribers": n, "bytes": size_bytes, "raw_s": raw}
            for key, samples in times.items():
                row[f"{key}_s"] = stat(samples)
                row[f"{key}_vs_raw"] = row[f"{key}_s"] / raw
            rows.append(row)
    return rows


class _Child:
    """The subscribers' process; it writes one line per event ("ready", then a finish time per version)."""

    def __init__(self, kind: str, port: int, n: int, expect: int, after: int = 0) -> None:
        args = [
            sys.executable,
            "-m",
            "impala.tools.bench.weights_fanout",
            kind,
            str(port),
            str(n),
            str(expect),
            str(after),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    async def line(self) -> str:
        assert self.proc.stdout is not None
        text = await asyncio.to_thread(self.proc.stdout.readline)
        if not text:
            raise RuntimeError(f"subscriber process exited with {self.proc.wait()}")
        return text.strip()

    async def finished_at(self) -> float:
        return float(await self.line())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def _raw(n: int, size: int, rounds: int) -> list[float]:
    """The floor: ``sock_sendall`` of the same bytes object to N non-blocking sockets (no user-space copy)."""
    payload = os.urandom(size)
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        child = _Child("raw", listener.getsockname()[1], n, size)
        socks = [listener.accept()[0] for _ in range(n)]
        try:
            for sock in socks:
                sock.setblocking(False)
            times = []
            for _ in range(rounds + 1):  # the first round warms up
                start = time.monotonic()
                await asyncio.gather(*(loop.sock_sendall(sock, payload) for sock in socks))
                times.append(await child.finished_at() - start)
            return times[1:]
        finally:
            for sock in socks:
                sock.close()
            child.stop()


async def _service(n: int, size: int, rounds: int, redis_url: str) -> dict[str, list[float]]:
    """Seconds per round (warm-up dropped) of the bulk fan-out, bulk publish and chunked fan-out."""
    settings = WeightsSettings(
        host="127.0.0.1", port=0, redis_url=redis_url, run=f"bench-{os.getpid()}-{n}", insecure=True
    )
    service = build_weight_service(settings, registry=CollectorRegistry())
    await service.start()
    payload = os.urandom(size)
    numbers = iter(range(1, 3 * (rounds + 1) + 1))
    publisher = WeightPublisher(f"127.0.0.1:{service.port}")
    times: dict[str, list[float]] = {}

    async def commit(version: WeightVersion) -> None:
        service.store.commit(version)

    async def publish(version: WeightVersion) -> None:
        await asyncio.to_thread(publisher.publish, version.version, "bench", payload)

    try:
        for key, kind, deliver in (
            ("fanout", "bulk", commit),
            ("publish", "bulk", publish),
            ("chunked", "grpc", commit),
        ):
            versions = [WeightVersion.build(next(numbers), "bench", payload) for _ in range(rounds + 1)]
            expect = size if kind == "bulk" else sum(map(len, versions[0].wire))
            after = service.store.latest.version if service.store.latest is not None else 0
            port = service.bulk.port if kind == "bulk" and service.bulk is not None else service.port
            child = _Child(kind, port, n, expect, after)
            try:
                await child.line()  # all subscribed
                times[key] = [await _round(child, deliver(v)) for v in versions][1:]  # the first warms up
            finally:
                child.stop()
        return times
    finally:
        publisher.close()
        await service.stop()


async def _round(child: _Child, delivery: Coroutine[Any, Any, None]) -> float:
    """Seconds from starting ``delivery`` until the child's subscribers all hold the version."""
    start = time.monotonic()
    await delivery
    return await child.finished_at() - start


def _raw_clients(port: int, n: int, size: int) -> None:
    """Receive each version into preallocated buffers with ``recv_into`` (no user-space copy)."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    buffers = [memoryview(bytearray(size)) for _ in range(n)]
    with selectors.DefaultSelector() as selector:
        while True:
            got = [0] * n
            for i, sock in enumerate(socks):
                selector.register(sock, selectors.EVENT_READ, i)
            left = n
            while left:
                for key, _ in selector.select():
                    i = key.data
                    received = socks[i].recv_into(buffers[i][got[i] :])
                    if received == 0:
                        return  # the server closed: done
                    got[i] += received
                    if got[i] == size:
                        selector.unregister(socks[i])
                        left -= 1
            _report(time.monotonic())


async def _grpc_clients(port: int, n: int, wire_bytes: int, after: int) -> None:
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(n)]
    calls: list[Any] = [
        ch.unary_stream(SUBSCRIBE, request_serializer=weights_pb2.SubscribeRequest.SerializeToString)(
            weights_pb2.SubscribeRequest(subscriber_id=f"bench-{i}", after_version=after)
        )
        for i, ch in enumerate(channels)
    ]
    for call in calls:
        await call.wait_for_connection()
    _report("ready")
    while True:
        await asyncio.gather(*(_read_version(call, wire_bytes) for call in calls))
        _report(time.monotonic())


async def _bulk_clients(port: int, n: int, size: int, after: int) -> None:
    """N push subscriptions to the data plane on ``port``; each version counted as it completes."""
    receivers = [
        await bulk_client.push_subscribe("127.0.0.1", port, after, "", max_bytes=size, timeout_s=60) for _ in range(n)
    ]
    _report("ready")
    while True:
        await asyncio.gather(*(_take_pushed(r, size) for r in receivers))
        _report(time.monotonic())


async def _take_pushed(receiver: bulk_client.PushReceiver, size: int) -> None:
    pushed = await receiver.next(60)
    if pushed is None or len(pushed.payload) != size:
        raise RuntimeError(f"push connection ended or delivered the wrong size: {pushed!r}")
    receiver.release(pushed.payload)


async def _read_version(call: Any, wire_bytes: int) -> None:
    got = 0
    while got < wire_bytes:
        message = await call.read()
        got += len(message)
    if got != wire_bytes:
        raise RuntimeError(f"read {got} bytes of a {wire_bytes}-byte version")


def _report(event: float | str) -> None:
    sys.stdout.write(f"{event}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    # The subscribers' side: python -m impala.tools.bench.weights_fanout raw|bulk|grpc PORT N BYTES_PER_VERSION AFTER_VERSION
    kind, port, n, expect, after = sys.argv[1], *map(int, sys.argv[2:6])
    heap.retain_freed_memory()  # as in the ActorPool that subscribes; the raw clients get the same heap
    if kind == "raw":
        _raw_clients(port, n, expect)
    else:
        asyncio.run((_bulk_clients if kind == "bulk" else _grpc_clients)(port, n, expect, after))
