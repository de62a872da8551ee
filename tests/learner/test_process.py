"""`impala learner` as a real process: kill -9 with entries in flight, restart from the checkpoint with
identical counters and parameters, every rollout accounted for, then SIGTERM → final checkpoint, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from impala.core.checkpoints import latest_checkpoint, load_checkpoint
from impala.core.redis_keys import LEARNER_GROUP
from impala.core.redis_server import RedisServer
from tests.support import wait_for

from .harness import (
    KEYS,
    T,
    checkpoint_entry,
    counters,
    learner_fields,
    produce,
    request_checkpoint,
    rollout,
    status,
)


def start_learner(redis_url: str, checkpoint_dir: Path, consumer: str, log: Path) -> subprocess.Popen[bytes]:
    settings = learner_fields(redis_url, checkpoint_dir, claim_idle_s=0.5, consumer=consumer, log_format="text")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    env.update({f"IMPALA_{k.upper()}": str(v) for k, v in settings.items()})
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "impala", "learner"], env=env, stdout=out, stderr=out)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def served(client: redis.Redis, checkpoint_id: str) -> dict[str, Any]:
    request_checkpoint(client, checkpoint_id)
    return wait_for(lambda: checkpoint_entry(client, checkpoint_id), lambda e: e.get("status") == "done", 60)


def pending(client: redis.Redis) -> int:
    return int(client.xpending(KEYS.rollouts, LEARNER_GROUP)["pending"])


@pytest.mark.slow
def test_kill9_restart_resumes_exactly_and_loses_no_rollout(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ckpt_dir, log = tmp_path / "ckpt", tmp_path / "learner.log"
    first = start_learner(redis_server.url, ckpt_dir, "learner-a", log)
    try:
        produce(redis_client, [rollout(seed=i, returns=(float(i),)) for i in range(8)])
        wait_for(lambda: status(redis_client).get("learner_step"), lambda s: s == "4", 60)
        saved = served(redis_client, "a-4")
        # Paused, learner-a reads ahead and holds entries it has not learned from, then dies holding them.
        redis_client.hset(KEYS.state, "paused", "1")
        wait_for(lambda: status(redis_client).get("paused"), lambda p: p == "1")
        produce(redis_client, [rollout(seed=100 + i) for i in range(10)])
        wait_for(lambda: pending(redis_client), lambda n: n >= 2)
        # The decode process (ADR 0011) and multiprocessing's resource tracker.
        helpers = children(first.pid)
        assert any(b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in helpers)
    finally:
        first.kill()
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    # Their parent gone, they exit on their own (the decode process acknowledges nothing more).
    wait_for(lambda: [pid for pid in helpers if running(pid)], lambda alive: not alive)
    held = pending(redis_client)
    assert held >= 2
    before = load_checkpoint(Path(saved["path"]))

    second = start_learner(redis_server.url, ckpt_dir, "learner-b", log)
    try:
        # Still paused: the restarted learner takes no step, so its checkpoint must equal the one it resumed.
        resumed = served(redis_client, "b-resumed")
        after = load_checkpoint(Path(resumed["path"]))
        for key in ("learner_steps", "env_steps", "policy_version", "episodes", "episode_returns"):
            assert after[key] == before[key], key
        assert (after["learner_steps"], after["env_steps"], after["episodes"]) == (4, 8 * T, 8)
        torch.testing.assert_close(after["model"], before["model"], rtol=0, atol=0)
        torch.testing.assert_close(after["optimizer"], before["optimizer"], rtol=0, atol=0)
        assert after["scheduler"] == before["scheduler"]

        redis_client.hset(KEYS.state, "paused", "0")
        wait_for(lambda: counters(redis_client).get("rollouts_consumed"), lambda n: n == 18, 60)
        wait_for(lambda: status(redis_client).get("learner_step"), lambda s: s == "9")
        assert redis_client.xlen(KEYS.rollouts) == 0
        assert pending(redis_client) == 0
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(30)
    final = load_checkpoint(latest_checkpoint(ckpt_dir) or Path("missing"))
    assert (final["learner_steps"], final["env_steps"]) == (9, 18 * T)
    assert counters(redis_client) == {"rollouts_consumed": 18}
    assert status(redis_client)["last_checkpoint_step"] == "9"
