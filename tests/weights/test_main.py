"""``impala weights`` as a real process (health, metrics, SIGTERM), and TLS end to end."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from impala.core.redis_server import RedisServer, free_port
from impala.weights.publisher import WeightPublisher

from .harness import TOKEN, running_service, subscriber, take


def wait_serving(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service="impala.weights.v1.WeightService"), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"weight service not serving on {port} within {timeout_s}s")
            time.sleep(0.05)


@pytest.mark.slow
def test_cli_serves_health_and_metrics_and_stops_on_sigterm(redis_server: RedisServer) -> None:
    port, metrics_port = free_port(), free_port()
    args = [
        sys.executable, "-m", "impala", "weights",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--redis-url", redis_server.url, "--run", "cli", "--token", TOKEN, "--log-format", "text",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        wait_serving(port)
        publisher = WeightPublisher(f"127.0.0.1:{port}", token=TOKEN)
        try:
            publisher.publish(3, "fp-a", b"weights")
        finally:
            publisher.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "impala_weights_version 3.0" in text
        assert "impala_weights_publish_total 1.0" in text
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert TOKEN not in stderr  # the token never reaches a log line


async def test_tls_end_to_end(redis_server: RedisServer, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    async with running_service(redis_server.url, tls_cert=cert_file, tls_key=key_file) as (service, _):
        assert service.bulk is None  # the data plane is plain TCP: with TLS every subscriber takes chunks
        publisher = WeightPublisher(f"127.0.0.1:{service.port}", token=TOKEN, tls_ca=ca_file)
        sub = subscriber(service, tls_ca=ca_file)
        try:
            await asyncio.to_thread(publisher.publish, 1, "fp-a", b"over tls")
            assert [u.payload for u in await take(sub, 1)] == [b"over tls"]
        finally:
            publisher.close()
            await sub.close()
