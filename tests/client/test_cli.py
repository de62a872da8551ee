"""``impala env`` as a real subprocess against the scripted pool: budgets, signals, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc

from tests.client.scripted_pool import ScriptedPool, decode, eventually, serving


async def start_env(port: int, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "impala",
        "env",
        "--address",
        f"127.0.0.1:{port}",
        "--backoff-base-s",
        "0.05",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, list[dict[str, object]]]:
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    return proc.returncode, lines


async def test_max_steps_exits_zero_and_logs_throughput() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        proc = await start_env(port, "--num-envs", "4", "--max-steps", "400", "--log-interval-s", "0.001")
        code, lines = await finish(proc)
    assert code == 0, lines
    [stream] = pool.streams
    assert len(stream.steps) == 1 + 100
    assert stream.half_closed
    assert decode(stream.steps[0].observation).shape == (4, 4)
    rates = [line for line in lines if line["msg"] == "env steps"]
    assert rates
    assert all(float(str(line["env_steps_per_second"])) > 0 for line in rates)
    assert [line["env_steps"] for line in lines if line["msg"] == "env client done"] == [400]


async def test_reconnect_on_reset_runs_one_env_streams_side_by_side() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        proc = await start_env(port, "--num-envs", "2", "--reconnect-on-reset", "--max-steps", "100")
        code, lines = await finish(proc)
    assert code == 0, lines
    assert len(pool.streams) > 2  # CartPole episodes with these actions last far fewer than 50 steps
    assert all(s.messages[0].hello.num_envs == 1 and s.half_closed for s in pool.streams)
    names = {s.messages[0].hello.client_name for s in pool.streams}
    assert len(names) == 2  # two clients, each redialing per episode


async def test_sigterm_finishes_the_exchange_and_exits_zero() -> None:
    pool = ScriptedPool()
    async with serving(pool) as port:
        proc = await start_env(port, "--num-envs", "4")
        await eventually(lambda: pool.steps_seen >= 20 or proc.returncode is not None)
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        code, lines = await finish(proc)
        await asyncio.sleep(0.05)
    assert code == 0, lines
    [stream] = pool.streams
    assert stream.half_closed
    assert len(stream.actions) == len(stream.steps)
    assert any(str(line["msg"]).startswith("signal received") for line in lines)


async def test_refused_token_exits_one_without_retrying(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123456\n")
    pool = ScriptedPool(refusals=[(grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")] * 5)
    async with serving(pool) as port:
        proc = await start_env(port, "--num-envs", "1", "--token-file", str(token_file))
        code, lines = await finish(proc)
    assert code == 1
    assert len(pool.streams) == 1
    assert pool.streams[0].metadata["authorization"] == "Bearer file-token-123456"
    assert any("UNAUTHENTICATED" in str(line.get("error", "")) for line in lines)
    assert not any("file-token-123456" in json.dumps(line) for line in lines)  # the token never reaches a log
