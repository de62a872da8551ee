"""Process helpers for the fault scenarios: waiting with a guard, liveness and process groups read
from ``/proc``, and ``impala <service>`` children (env clients among them) with JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from impala.core.processes import kill_group, proc_stat, stop_group

T = TypeVar("T")
ENV_ID = "CartPole-v1"


def alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgids: Sequence[int]) -> dict[int, list[int]]:
    """Live (non-zombie) processes in each of ``pgids``; groups without any are left out."""
    wanted, found = set(pgids), dict[int, list[int]]()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name))
        if fields is not None and int(fields[2]) in wanted and fields[0] not in ("Z", "X"):
            found.setdefault(int(fields[2]), []).append(int(entry.name))
    return found


def child_env() -> dict[str, str]:
    """Our environment without ``IMPALA_*`` (children get their flags only), one compute thread each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Service:
    """One ``python -m impala <args>`` child in its own process group, output appended to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, args: Sequence[str], log: Path) -> Service:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "impala", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
            )
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL the whole group past ``timeout_s``. Returns the exit code."""
        return stop_group(self.popen, timeout_s)

    def kill(self) -> int:
        return kill_group(self.popen)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_env_client(
    name: str,
    addresses: Sequence[str],
    log: Path,
    *,
    num_envs: int = 8,
    seed: int = 0,
    max_steps: int = 0,
    token_file: Path | None = None,
) -> Service:
    """``impala env`` dialing ``addresses`` in order (gRPC pick_first: a reconnect lands on a live one)."""
    args = ["env", "--address", "ipv4:" + ",".join(addresses), "--env", ENV_ID, "--num-envs", str(num_envs)]
    args += ["--seed", str(seed), "--max-steps", str(max_steps), "--client-name", name, "--log-format", "json"]
    args += ["--backoff-base-s", "0.1", "--backoff-max-s", "1"]
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    return Service.start(name, args, log)


def client_env_steps(client: Service) -> int:
    """Env steps a finished client took (its ``env client done`` line)."""
    done = [r for r in client.records() if r.get("msg") == "env client done"]
    assert done, f"{client.name} has not finished:\n{client.text()[-2000:]}"
    return int(done[-1]["env_steps"])


def connections(client: Service) -> list[dict[str, Any]]:
    """The client's ``connected to pool`` lines (one per stream it opened)."""
    return [r for r in client.records() if r.get("msg") == "connected to pool"]
