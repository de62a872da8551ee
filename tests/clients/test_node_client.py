"""The JavaScript client of docs/bring-your-own-env.md (clients/node), written from the proto alone, keeps
working: it serves the one-step memory task to a pool built from a spec file, vectorized and by reset-by-
reconnect, with a bearer token; the pool records every transition and episode it reports."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from impala.actorpool.policy import PolicyHolder
from impala.actorpool.server import build_actorpool
from impala.actorpool.settings import ActorPoolSettings
from impala.actorpool.sinks import MemorySink
from impala.core.models import build_model, spec_from_settings
from tests.actorpool.harness import decoded

CLIENT = Path(__file__).parents[2] / "clients" / "node"
LENGTH = 20  # the JavaScript client's episodes (memory_client.js)
SPEC = {"observation": {"shape": [1], "dtype": "float32"}, "action": {"type": "discrete", "n": 2}}
TOKEN = "node-client-token"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if not (CLIENT / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, timeout=300)
    return CLIENT / "node_modules"


@pytest.mark.parametrize(("flags", "steps"), [(["--envs", "4"], 4 * 3 * LENGTH), (["--reconnect"], 3 * LENGTH)])
async def test_node_client_serves_the_memory_task(
    flags: list[str], steps: int, tmp_path: Path, node_modules: Path
) -> None:
    spec_file = tmp_path / "memory.json"
    spec_file.write_text(json.dumps(SPEC))
    settings = ActorPoolSettings(host="127.0.0.1", port=0, token=TOKEN, unroll_length=7, env_spec=spec_file)
    spec = spec_from_settings(settings)
    sink = MemorySink()
    pool = build_actorpool(
        settings, policy=PolicyHolder(build_model(spec)), spec=spec, sink=sink, registry=CollectorRegistry()
    )
    await pool.start()
    try:
        argv = ["node", "memory_client.js", "--address", f"127.0.0.1:{pool.port}", "--token", TOKEN]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *flags,
            "--steps",
            str(steps),
            cwd=CLIENT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await pool.stop()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["env_steps"] == steps and report["episodes"] == steps // LENGTH
    records = decoded(sink)
    assert sum(r.length for r in records) == steps  # every transition the client made, once
    lengths = [n for r in records for n in r.episode_lengths]
    assert lengths == [LENGTH] * (steps // LENGTH)
    returns = sorted(x for r in records for x in r.episode_returns)
    assert all(0 <= x <= LENGTH for x in returns)


async def test_node_client_with_a_wrong_token_is_refused(tmp_path: Path, node_modules: Path) -> None:
    spec_file = tmp_path / "memory.json"
    spec_file.write_text(json.dumps(SPEC))
    settings = ActorPoolSettings(host="127.0.0.1", port=0, token=TOKEN, env_spec=spec_file)
    spec = spec_from_settings(settings)
    pool = build_actorpool(
        settings, policy=PolicyHolder(build_model(spec)), spec=spec, sink=MemorySink(), registry=CollectorRegistry()
    )
    await pool.start()
    try:
        argv = ["node", "memory_client.js", "--address", f"127.0.0.1:{pool.port}", "--token", "wrong", "--steps", "20"]
        proc = await asyncio.create_subprocess_exec(*argv, cwd=CLIENT, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await pool.stop()
    assert proc.returncode == 1 and "UNAUTHENTICATED" in err.decode()
