"""No secret leaves its file: ``impala local`` runs with tokens set, and every place a secret could
leak is searched for each of them.

Places checked: every file of the run directory except ``secrets/`` (config.json, endpoints.json,
metrics.csv, the learning curve, every log, redis' files), each checkpoint loaded with ``torch.load``
(its stored config included), the stdout/stderr of ``impala local`` (its printed hints), the command
line of every process it started (``/proc/<pid>/cmdline``), and ``--help`` of every subcommand.
Tokens: the three the session generates (ingress, control, weights; read from ``secrets/``) and
canaries set as ``IMPALA_TOKEN``/``IMPALA_WEIGHTS_TOKEN`` in the environment of ``impala local``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from impala.core import logs
from impala.core.processes import stop_group

CANARIES = {"IMPALA_TOKEN": "canary-token-5f1d0c9e7a", "IMPALA_WEIGHTS_TOKEN": "canary-weights-84be11a2c3"}


def descendants(root: int) -> set[int]:
    """PIDs whose parent chain leads to ``root``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdlines(pids: set[int]) -> dict[int, str]:
    out = {}
    for pid in pids:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if line:  # a zombie has none
            out[pid] = line
    return out


def strings_in(value: Any) -> list[str]:
    """Every string (keys, values, reprs of leaves) of a loaded checkpoint."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *strings_in(v)]]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, torch.Tensor):
        return []
    return [repr(value)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_token_in_run_files_checkpoints_logs_hints_or_process_arguments(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out_path = tmp_path / "stdout.txt"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}, **CANARIES}
    argv = [sys.executable, "-m", "impala", "local", "--run-dir", str(run_dir), "--no-target", "--no-live",
            "--max-env-steps", "4000", "--max-seconds", "240"]  # fmt: skip
    with out_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        seen: dict[int, str] = {}
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                seen.update(cmdlines(descendants(proc.pid)))
                time.sleep(0.5)
        finally:
            stop_group(proc, 120)
    assert proc.returncode == 0, out_path.read_text()[-3000:]

    tokens = [p.read_text().strip() for p in sorted((run_dir / "secrets").glob("*.token"))]
    assert len(tokens) == 3 and all(len(t) >= 16 for t in tokens)
    secrets = [*tokens, *CANARIES.values()]
    started = {line.split()[3] for line in seen.values() if " -m impala " in line}
    assert {"learner", "weights", "actorpool", "env", "control"} <= started, sorted(started)

    files = [p for p in run_dir.rglob("*") if p.is_file() and "secrets" not in p.relative_to(run_dir).parts]
    names = {p.relative_to(run_dir).as_posix() for p in files}
    assert {"config.json", "endpoints.json", "metrics.csv", "logs/learner.log", "logs/local.log"} <= names, names
    checkpoints = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert checkpoints, names
    json.loads((run_dir / "config.json").read_text())  # a real config, masked
    places: dict[str, bytes] = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in files}
    places["impala local output"] = out_path.read_bytes()
    places.update({f"/proc/{pid}/cmdline": line.encode() for pid, line in seen.items()})
    for ckpt in checkpoints:
        payload = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert payload.get("config"), "the learner stores its config in each checkpoint"
        places[f"{ckpt.name} (loaded)"] = "\n".join(strings_in(payload)).encode()
    for command in ("actorpool", "learner", "weights", "control", "env", "local", "eval", "export", "bench"):
        helped = subprocess.run([sys.executable, "-m", "impala", command, "--help"], capture_output=True, env=env)
        places[f"impala {command} --help"] = helped.stdout + helped.stderr
    leaks = [(where, s[:8]) for where, data in places.items() for s in secrets if s.encode() in data]
    assert not leaks, leaks
    assert "--token-file" in out_path.read_text()  # the dial-in hint names the file, not the value


def test_secrets_are_masked_in_log_lines_at_every_level(caplog: pytest.LogCaptureFixture) -> None:
    secret = "debug-level-secret-0123"
    logs.register_secret(secret)
    mask = logs.SecretMask()
    for level in (logging.DEBUG, logging.INFO, logging.ERROR):
        record = logging.LogRecord("impala.t", level, __file__, 1, "token %s", (secret,), None)
        record.detail = f"x{secret}x"
        mask.filter(record)
        assert secret not in record.getMessage() and secret not in record.detail
