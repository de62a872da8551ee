"""The live /metrics endpoint of every running service passes `promtool check metrics` and serves
every impala_* metric the dashboards and alerts use for that service (real processes, real HTTP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from impala.core.redis_server import RedisServer, free_port
from tests.monitoring.promql import NEEDS_PROMTOOL, PROMTOOL, used_metric_names

pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROMTOOL is None, reason=NEEDS_PROMTOOL)]
TOKEN = "control-token-0123456789"


@pytest.fixture
def services(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """name -> (metrics URL, request headers) of live weights, learner, actorpool and control processes."""
    ports = {name: free_port() for name in ("weights", "weights-m", "learner-m", "pool", "pool-m", "control")}
    common = ["--run", "live", "--redis-url", redis_server.url]
    argv = {
        "weights": ["weights", *common, "--insecure", "--host", "127.0.0.1", "--port", str(ports["weights"]),
                    "--metrics-port", str(ports["weights-m"])],
        "learner": ["learner", *common, "--weights-address", f"127.0.0.1:{ports['weights']}",
                    "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-port", str(ports["learner-m"])],
        "actorpool": ["actorpool", *common, "--insecure", "--host", "127.0.0.1", "--port", str(ports["pool"]),
                      "--metrics-port", str(ports["pool-m"])],
        "control": ["control", *common, "--host", "127.0.0.1", "--port", str(ports["control"]), "--token", TOKEN],
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "impala", *args],
            env=env,
            stdout=(tmp_path / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, args in argv.items()
    ]
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        yield {
            "weights": (f"http://127.0.0.1:{ports['weights-m']}/metrics", {}),
            "learner": (f"http://127.0.0.1:{ports['learner-m']}/metrics", {}),
            "actorpool": (f"http://127.0.0.1:{ports['pool-m']}/metrics", {}),
            "control": (f"http://127.0.0.1:{ports['control']}/metrics", auth),
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def scrape(url: str, headers: dict[str, str], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.get(url, headers=headers, timeout=2)
            if response.status_code == 200:
                return response.text
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not serve /metrics within {timeout_s}s")
        time.sleep(0.2)


def test_live_metrics_are_clean_and_complete(services: dict[str, tuple[str, dict[str, str]]]) -> None:
    used = used_metric_names()
    for name, (url, headers) in services.items():
        text = scrape(url, headers)
        # The learner serves /metrics before it has joined its ranks (ADR 0022); its own series appear
        # once it is built, so wait for them rather than read the first page.
        deadline = time.monotonic() + 120
        while name == "learner" and "impala_learner_steps_total" not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            text = scrape(url, headers)
        assert PROMTOOL is not None
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
        assert lint.returncode == 0, f"{name}: {lint.stdout}{lint.stderr}"
        prefix = f"impala_{'control' if name == 'control' else name}_"
        served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        served |= {n.removesuffix("_total") for n in served}
        wanted = {m for m in used if m.startswith(prefix)}
        assert wanted, f"no dashboard or alert uses {prefix}* metrics"
        missing = {m for m in wanted if m not in served and m.removesuffix("_total") not in served}
        assert not missing, f"{name} does not serve {sorted(missing)}"
        if name == "actorpool":
            buffer_wanted = {m for m in used if m.startswith("impala_buffer_")}
            assert buffer_wanted <= served, "the pool process serves the buffer depth and capacity"
