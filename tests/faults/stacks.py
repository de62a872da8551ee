"""``impala local`` as the fault tests drive it: started as a user would (a subprocess, its own
process group), read through ``endpoints.json``, Redis and the control API over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from impala.core.processes import stop_group
from impala.core.redis_keys import RunKeys
from tests.support import wait_for

from .accounting import Ledger, read_ledger, stream_steps
from .harness import Service, alive, child_env, start_env_client


@dataclass(frozen=True)
class Quiet:
    """The stack at rest: the learner's env steps, the env steps in the stream, the ledger."""

    learner_env_steps: int
    stream_env_steps: int
    ledger: Ledger


class LocalStack:
    """One ``impala local --no-target`` run with ``pools`` ActorPools and no env clients of its own
    (the tests start theirs, so they know every env step that was taken)."""

    def __init__(self, run_dir: Path, *, pools: int) -> None:
        self.run_dir, self.pools = run_dir, pools
        self.out = run_dir.parent / f"{run_dir.name}.stdout"
        argv = [sys.executable, "-m", "impala", "local", "--run-dir", str(run_dir), "--pools", str(pools)]
        argv += ["--clients", "0", "--no-target", "--no-live", "--startup-timeout", "120"]
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True
            )
        endpoints = self.run_dir / "endpoints.json"
        wait_for(endpoints.exists, timeout_s=120, what="endpoints.json", guard=self.guard)
        self.endpoints: dict[str, Any] = json.loads(endpoints.read_text())
        self.keys = RunKeys(self.endpoints["run"])
        self.redis = redis.Redis.from_url(self.endpoints["redis_url"], socket_timeout=5.0)
        headers = {"Authorization": f"Bearer {Path(self.endpoints['control_token_file']).read_text().strip()}"}
        self.http = httpx.Client(base_url=self.endpoints["control_url"], headers=headers, timeout=30.0)
        # The learner's hyperparameters as impala local chose them (the env preset's).
        self.learner_settings: dict[str, Any] = json.loads((run_dir / "config.json").read_text())["services"]["learner"]
        self.token_file = run_dir / "secrets" / "ingress.token"
        self.clients: list[Service] = []

    def guard(self) -> None:
        """Fail now if ``impala local`` itself exited."""
        if self.proc.poll() is not None:
            tail = self.out.read_text(errors="replace")[-3000:]
            raise AssertionError(f"impala local exited with {self.proc.returncode}:\n{tail}")

    def wait(self, what: str, predicate: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        return wait_for(predicate, timeout_s=timeout_s, what=what, guard=self.guard)

    def pids(self) -> dict[str, int]:
        """PIDs of the services as the supervisor last wrote them (it rewrites them on every restart)."""
        doc = json.loads((self.run_dir / "endpoints.json").read_text())
        return {name: int(pid) for name, pid in doc["pids"].items()}

    def kill(self, service: str, sig: signal.Signals = signal.SIGKILL) -> int:
        pid = self.pids()[service]
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, service: str, old_pid: int, timeout_s: float = 60.0) -> int:
        """The PID of the supervisor's replacement for ``old_pid``."""

        def replaced() -> int | None:
            pid = self.pids().get(service)
            return pid if pid is not None and pid != old_pid and alive(pid) else None

        pid: int = self.wait(f"{service} to be restarted", replaced, timeout_s)
        return pid

    def learner(self) -> dict[str, str]:
        return _decoded(self.redis.hgetall(self.keys.learner_status))

    def pool(self, index: int) -> dict[str, str]:
        return _decoded(self.redis.hgetall(self.keys.pool_status(f"actorpool-{index}")))

    def pool_int(self, index: int, key: str) -> int:
        return int(float(self.pool(index).get(key, 0)))

    def learner_int(self, key: str) -> int:
        return int(float(self.learner().get(key, 0)))

    def wait_reported_since(self, since: float) -> None:
        """Until the learner and every pool wrote a status heartbeat after ``since`` (unix seconds), so
        what their hashes say is newer than whatever happened before then."""

        def fresh() -> bool:
            beats = [self.learner(), *(self.pool(i) for i in range(self.pools))]
            return all(float(b.get("heartbeat", 0)) > since for b in beats)

        self.wait("fresh status heartbeats", fresh)

    def pool_versions(self) -> list[int]:
        return [self.pool_int(i, "policy_version") for i in range(self.pools)]

    def pool_steps(self) -> int:
        return sum(self.pool_int(i, "env_steps") for i in range(self.pools))

    def quiesce(self) -> Quiet:
        """Wait until no client is connected and the learner, stream and counters stop moving."""
        self.wait("pools without clients", lambda: sum(self.pool_int(i, "clients") for i in range(self.pools)) == 0)
        last: tuple[object, ...] = ()
        steady_since = time.monotonic()
        while True:
            ledger, (steps, ids) = self.ledger(), stream_steps(self.redis, self.keys)
            now = (self.learner_int("env_steps"), self.learner_int("learner_step"), ids, ledger)
            if now != last:
                last, steady_since = now, time.monotonic()
            elif time.monotonic() - steady_since >= 2.5:  # > 2 status periods of the learner
                return Quiet(now[0], steps, ledger)
            self.guard()
            time.sleep(0.25)

    def ledger(self) -> Ledger:
        return read_ledger(self.redis, self.keys)

    def log(self, service: str) -> str:
        return (self.run_dir / "logs" / f"{service}.log").read_text(errors="replace")

    def address(self, index: int) -> str:
        return str(self.endpoints["ingress"][index])

    def start_client(self, name: str, order: list[int], *, seed: int, max_steps: int = 0) -> Service:
        """An env client dialing the pools in ``order`` (the first live one wins)."""
        client = start_env_client(
            name,
            [self.address(i) for i in order],
            self.run_dir.parent / f"{name}.log",
            seed=seed,
            max_steps=max_steps,
            token_file=self.token_file,
        )
        self.clients.append(client)
        return client

    def stop_clients(self) -> None:
        """SIGTERM every client: each finishes its exchange and closes cleanly (pools ship partials)."""
        for client in self.clients:
            if client.running():
                code = client.stop()
                assert code == 0, f"{client.name} exited with {code}:\n{client.text()[-2000:]}"
        self.clients.clear()

    def close(self) -> None:
        """Stop everything (idempotent); the SIGTERM scenario may already have done it."""
        for client in self.clients:
            client.kill()
        stop_group(self.proc, 120)
        self.http.close()
        self.redis.close()


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
