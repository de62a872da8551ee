"""Ingress throughput: env steps/s through the ActorPool (validation, batched inference, rollout
building) vs a bare grpc.aio echo of the same messages, 1 and 16 envs per message, CartPole-size
and 84×84×4 uint8 observations. Server and load generator run in separate processes.

Both servers of a configuration run side by side (the idle one costs nothing) and are measured in
alternation over ``ROUNDS`` rounds of ``seconds / ROUNDS``; each figure is the median of its rounds, so
one noisy second on a shared machine moves neither side of the ratio much."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from impala.actorpool.v1 import actorpool_pb2, actorpool_pb2_grpc
from impala.core import tensors
from impala.tools.bench.report import Figure

SHAPES = {"cartpole": ((4,), np.float32, 2), "atari": ((4, 84, 84), np.uint8, 6)}


def start_server(kind: str, obs: str) -> tuple[subprocess.Popen[bytes], int]:
    port_file = Path(tempfile.mkstemp(prefix="impala-bench-")[1])
    port_file.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "impala.tools.bench.ingress_server", kind, obs, str(port_file)])
    deadline = time.monotonic() + 60
    while not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"bench server {kind}/{obs} did not start")
        time.sleep(0.05)
    port = int(port_file.read_text())
    port_file.unlink()
    return proc, port


async def drive(port: int, obs: str, num_envs: int, streams: int, seconds: float) -> float:
    """Env steps per second over ``streams`` concurrent streams of ``num_envs`` envs each."""
    shape, dtype, actions = SHAPES[obs]
    hello = actorpool_pb2.EnvMessage(
        hello=actorpool_pb2.Hello(
            client_name="bench",
            num_envs=num_envs,
            observation_spec=tensors.spec(dtype, shape),
            num_actions=actions,
            protocol_version=1,
        )
    )
    observation = tensors.encode(np.random.default_rng(0).integers(0, 255, (num_envs, *shape)).astype(dtype))
    step = actorpool_pb2.EnvMessage(
        step=actorpool_pb2.Step(
            observation=observation,
            reward=[0.0] * num_envs,
            terminated=[False] * num_envs,
            truncated=[False] * num_envs,
        )
    )
    counts = [0] * streams
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = actorpool_pb2_grpc.ActorPoolStub(channel)

        async def one(i: int, until: float) -> None:
            call = stub.Connect()
            await call.write(hello)
            await call.read()
            while time.monotonic() < until:
                await call.write(step)
                await call.read()
                counts[i] += 1
            await call.done_writing()

        warm_until = time.monotonic() + min(1.0, seconds / 3)
        await asyncio.gather(*(one(i, warm_until) for i in range(streams)))
        counts[:] = [0] * streams
        started = time.monotonic()
        await asyncio.gather(*(one(i, started + seconds) for i in range(streams)))
        elapsed = time.monotonic() - started
    return sum(counts) * num_envs / elapsed


ROUNDS = 3


def measure(obs: str, num_envs: int, streams: int, seconds: float) -> tuple[float, float]:
    """Median env steps/s of the echo and of the pool, measured in alternation."""
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    rates: dict[str, list[float]] = {"echo": [], "pool": []}
    try:
        for kind in rates:
            servers[kind] = start_server(kind, obs)
        for _ in range(ROUNDS):
            for kind, (_, port) in servers.items():
                rates[kind].append(asyncio.run(drive(port, obs, num_envs, streams, seconds / ROUNDS)))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    return statistics.median(rates["echo"]), statistics.median(rates["pool"])


# (observation kind, envs per message, concurrent streams). Few streams show the latency-bound regime
# (each stream waits for its batch), many streams the pool's capacity (batches fill up); the echo runs
# under the same load each time.
CONFIGS: list[tuple[str, int, int]] = [
    (obs, num_envs, streams)
    for obs in ("cartpole", "atari")
    for num_envs, streams in ((1, 8), (1, 32), (16, 4), (16, 16))
]


def bench_ingress(seconds: float) -> list[Figure]:
    figures = []
    for obs, num_envs, streams in CONFIGS:
        echo, pool = measure(obs, num_envs, streams, seconds)
        name = f"ingress {obs} {num_envs} env/msg × {streams} streams"
        figures.append(Figure(name, pool, "env steps/s", "bare grpc.aio echo", echo))
    return figures
