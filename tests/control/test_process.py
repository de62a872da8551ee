"""``python -m impala.control`` as a real process: restart while paused stays paused (the state lives in
Redis), SIGTERM stops it gracefully with exit 0, and the token never reaches its logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from impala.core.redis_server import RedisServer, free_port
from tests.control.harness import RUN, TOKEN

pytestmark = pytest.mark.slow


@contextmanager
def control_process(
    redis_url: str, log_path: Path, kubeconfig: Path
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "IMPALA_RUN": RUN,
        "IMPALA_REDIS_URL": redis_url,
        "IMPALA_TOKEN": TOKEN,
        "IMPALA_HOST": "127.0.0.1",
        "IMPALA_PORT": str(port),
        "IMPALA_LOG_LEVEL": "DEBUG",
        "IMPALA_KUBECONFIG": str(kubeconfig),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "impala.control"], env=env, stdout=log, stderr=log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "control API did not come up"
            time.sleep(0.05)
        yield client, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_restart_while_paused_stays_paused_and_token_stays_out_of_logs(
    redis_server: RedisServer, tmp_path: Path, no_cluster: Path
) -> None:
    log_path = tmp_path / "control.log"
    with control_process(redis_server.url, log_path, no_cluster) as (api, proc):
        assert api.post("/v1/pause").status_code == 200
        # Requests that carry the token in places a careless server might log.
        assert api.get(f"/v1/checkpoints/{TOKEN}").status_code == 404
        assert api.get("/v1/status", params={"token": TOKEN}).status_code == 200
        assert (
            httpx.get(f"{api.base_url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}-wrong"}).status_code
            == 401
        )
        assert api.put("/v1/actorpool/replicas", json={"replicas": 2}).status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0

    with control_process(redis_server.url, log_path, no_cluster) as (api, proc):
        status = api.get("/v1/status").json()
        assert status["paused"] is True
        assert api.post("/v1/pause").status_code == 409
        assert api.post("/v1/resume").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0

    logs = log_path.read_text()
    # The logs are there (so the check below has something to look at) ...
    assert logs.count("control API started") == 2
    assert '"msg": "run paused"' in logs
    assert "control API stopped" in logs
    # ... and the token is not, in any of them.
    assert TOKEN not in logs


def test_metrics_port_serves_metrics_on_a_second_port(
    redis_server: RedisServer, tmp_path: Path, no_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_port = free_port()
    monkeypatch.setenv("IMPALA_METRICS_PORT", str(metrics_port))
    with control_process(redis_server.url, tmp_path / "control.log", no_cluster) as (api, _proc):
        assert api.get("/v1/status").status_code == 200
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "impala_control_" in scraped.text
