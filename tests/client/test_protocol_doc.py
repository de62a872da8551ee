"""docs/protocol.md is enough to write a client: its minimal client, built only from the proto files
(code generated here, not the SDK's), runs against the real pool; its grpcurl JSON parses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from grpc_tools import protoc  # type: ignore[import-untyped]

from impala.actorpool.v1 import actorpool_pb2
from impala.core import tensors
from tests.actorpool.harness import decoded, running_pool
from tests.client.scripted_pool import eventually

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def example_source() -> str:
    after = DOC.split("<!-- example: minimal_client.py", 1)[1]
    return after.split("```python\n", 1)[1].split("\n```", 1)[0]


def generate(out: Path) -> None:
    """What the doc tells a client author to run, into ``out``; made a regular package so that it,
    not the installed SDK, is what the example imports."""
    out.mkdir()
    protos = ["impala/tensor/v1/tensor.proto", "impala/actorpool/v1/actorpool.proto"]
    args = ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    assert protoc.main(args) == 0
    for package in ["impala", "impala/actorpool", "impala/actorpool/v1", "impala/tensor", "impala/tensor/v1"]:
        (out / package / "__init__.py").touch()


async def test_minimal_client_from_the_doc_runs_against_the_pool(tmp_path: Path) -> None:
    (tmp_path / "minimal_client.py").write_text(example_source())
    generate(tmp_path / "gen")
    check = f"import impala, sys; assert impala.__file__.startswith({str(tmp_path)!r}), impala.__file__; "
    run = "import runpy; runpy.run_path('minimal_client.py', run_name='__main__')"
    async with running_pool(unroll_length=5, token="doc-token-12345") as (pool, sink):
        argv = ["minimal_client.py", f"127.0.0.1:{pool.port}", "3", "doc-token-12345"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"import sys; sys.argv = {argv!r}; {check}{run}",
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path / "gen")},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        match = re.fullmatch(r"episodes=3 steps=(\d+)\n", out.decode())
        assert match, out.decode()
        steps = int(match.group(1))
        # The pool ships the last partial rollout once it has seen the client's close.
        await eventually(lambda: sum(r.length for r in decoded(sink)) >= steps)
        records = decoded(sink)
    assert sum(r.length for r in records) == steps
    ends = sum(int(np.logical_or(r.terminated, r.truncated)[: r.length].sum()) for r in records)
    assert ends == 3  # the close after the last reset adds no transition
    assert sum(len(r.episode_returns) for r in records) == 3


def test_grpcurl_messages_in_the_doc_are_valid() -> None:
    block = DOC.split("<<'JSON'\n", 1)[1].split("JSON\n", 1)[0]
    hello, step = (json_format.Parse(line, actorpool_pb2.EnvMessage()) for line in block.splitlines())
    assert hello.hello.num_envs == 1
    assert hello.hello.protocol_version == 1
    assert np.asarray(tensors.decode(step.step.observation)).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    reply = re.search(r"`(\{\"actions\".*?\})`", DOC)
    assert reply is not None
    actions = json_format.Parse(reply.group(1), actorpool_pb2.AgentMessage())
    assert np.asarray(tensors.decode(actions.actions.actions)).tolist() == [1]
    assert json.loads(reply.group(1))["actions"]["policyVersion"] == "3"
