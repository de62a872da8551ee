"""helm/impala/files/healthcheck.py (the helm test pods' and images' probe) against real servers: a
grpc.aio server with the standard health service on port 0, TLS included, and a real HTTP server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from grpc_health.v1 import health_pb2

from impala.core.grpc_server import GrpcServer, TlsFiles
from tests.chart.render import CHART

SCRIPT = CHART / "files" / "healthcheck.py"


async def probe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the script as the pods do, in a subprocess (the event loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--timeout", "5", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_grpc_mode_follows_the_health_service() -> None:
    server = GrpcServer(host="127.0.0.1", port=0, tokens=["secret"])  # health needs no token
    port = await server.start()
    try:
        healthy = await probe("grpc", f"127.0.0.1:{port}")
        assert healthy.returncode == 0, healthy.stderr
        await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # what a draining pool says
        draining = await probe("grpc", f"127.0.0.1:{port}")
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stderr
    finally:
        await server.stop(0)
    gone = await probe("grpc", f"127.0.0.1:{port}")
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stderr


async def test_grpc_mode_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("impala.example.com")
    cert_file, key_file, ca_file = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = GrpcServer(host="127.0.0.1", port=0, tls=TlsFiles(cert=cert_file, key=key_file))
    port = await server.start()
    try:
        ok = await probe("grpc", f"127.0.0.1:{port}", "--tls-ca", str(ca_file), "--server-name", "impala.example.com")
        assert ok.returncode == 0, ok.stderr
        wrong_name = await probe(
            "grpc", f"127.0.0.1:{port}", "--tls-ca", str(ca_file), "--server-name", "other.example"
        )
        assert wrong_name.returncode == 1
    finally:
        await server.stop(0)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        return


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_mode(http_server: str) -> None:
    def run(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), "http", url], capture_output=True, text=True, check=False)

    assert run(f"{http_server}/healthz").returncode == 0
    not_ready = run(f"{http_server}/readyz")
    assert not_ready.returncode == 1 and "HTTP 503" in not_ready.stderr
