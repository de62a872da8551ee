"""docs/bring-your-own-env.md as a user reads it: the spec file and the Python example, copied from the
doc, run against ``impala local --env-spec spec.json --clients 0`` (real processes: redis, weights,
learner, control API, pool); the learner learns from what the example's plain class produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from impala.core.processes import stop_group

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "bring-your-own-env.md").read_text()


def example(name: str, language: str) -> str:
    after = DOC.split(f"<!-- example: {name}", 1)[1]
    return after.split(f"```{language}\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_docs_example_trains_against_impala_local_with_a_spec(tmp_path: Path) -> None:
    spec, client = tmp_path / "spec.json", tmp_path / "steer.py"
    spec.write_text(example("spec.json", "json"))
    client.write_text(example("steer.py", "python"))
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    argv = [sys.executable, "-m", "impala", "local", "--env-spec", str(spec), "--clients", "0", "--no-live"]
    argv += ["--run-dir", str(run_dir), "--max-seconds", "400"]
    log = (tmp_path / "local.txt").open("wb")
    local = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        endpoints = run_dir / "endpoints.json"
        deadline = time.monotonic() + 240
        while not endpoints.exists():
            assert local.poll() is None, (tmp_path / "local.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "impala local did not come up"
            time.sleep(0.2)
        done = subprocess.run(
            [sys.executable, str(client), str(endpoints)], env=env, capture_output=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        run = json.loads(endpoints.read_text())
        headers = {"authorization": f"Bearer {Path(run['control_token_file']).read_text().strip()}"}
        deadline = time.monotonic() + 60
        while True:
            status = httpx.get(f"{run['control_url']}/v1/status", headers=headers, timeout=5).json()
            if (status.get("env_steps") or 0) >= 10_000 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status["env_steps"] >= 10_000, status  # the learner learned from the example's steps
        assert status["learner_step"] > 0
    finally:
        stop_group(local, 120)
        log.close()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["local"]["env"] == "" and config["services"]["learner"]["env_spec"] == str(spec)
