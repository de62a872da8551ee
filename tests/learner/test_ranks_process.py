"""Two `impala learner` processes as ranks of one world (gloo, torchrun's variables): they learn as one
(global counters, rank 0 alone reports), pause reaches both, a SIGKILLed rank makes the other exit
within its collective timeout after checkpointing, and the restarted world resumes from that checkpoint;
a SIGTERM to one rank stops both in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from impala.core.checkpoints import latest_checkpoint, load_checkpoint
from impala.core.redis_keys import LEARNER_GROUP
from impala.core.redis_server import RedisServer, free_port
from tests.support import wait_for

from .harness import KEYS, T, learner_fields, produce, rollout, status

TIMEOUT_S = 20.0  # dist_timeout_s of the ranks


def start_world(redis_url: str, ckpt_dir: Path, logs: Path, size: int = 2) -> list[subprocess.Popen[bytes]]:
    settings = learner_fields(
        redis_url, ckpt_dir, consumer="lt", batch_size=2, log_format="text", dist_timeout_s=TIMEOUT_S
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    base.update({f"IMPALA_{k.upper()}": str(v) for k, v in settings.items()})
    base.update(WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port("127.0.0.1")))
    procs = []
    for rank in range(size):
        with (logs / f"rank{rank}.log").open("ab") as out:
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            procs.append(subprocess.Popen([sys.executable, "-m", "impala", "learner"], env=env, stdout=out, stderr=out))
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def consumers(client: redis.Redis) -> set[str]:
    return {c["name"].decode() for c in client.xinfo_consumers(KEYS.rollouts, LEARNER_GROUP)}


def step(client: redis.Redis) -> int:
    return int(status(client).get("learner_step", "-1"))


def unread(client: redis.Redis) -> int:
    try:
        pending = int(client.xpending(KEYS.rollouts, LEARNER_GROUP)["pending"])
    except redis.ResponseError:  # no group yet: nothing read
        pending = 0
    return int(client.xlen(KEYS.rollouts)) - pending


def feed_until(client: redis.Redis, target: int, world: list[subprocess.Popen[bytes]], logs: Any, seed: int) -> int:
    """Add rollouts two at a time until the world took ``target`` steps: a rank's decode process reads
    ahead, so a fixed count could leave one rank with all of them and the other with none."""
    deadline = time.monotonic() + 240  # generous: start-up on busy shared cores
    while (now := step(client)) < target:
        if unread(client) < 2:
            produce(client, [rollout(seed=seed + i, returns=(1.0,)) for i in range(2)])
            seed += 2
        _alive(world, logs)
        assert time.monotonic() < deadline, f"stuck at step {now}:\n{logs()}"
        time.sleep(0.05)
    return now


def assert_global(fields: dict[str, Any]) -> None:
    """Every update learned B=2 full rollouts of one episode each, whichever rank read them."""
    steps = int(fields["learner_step"])
    assert (int(fields["env_steps"]), int(fields["episodes"])) == (steps * 2 * T, steps * 2)


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_and_the_world_resumes(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    ckpt_dir = tmp_path / "ckpt"
    logs = lambda: "\n".join(p.read_text()[-2500:] for p in sorted(tmp_path.glob("rank*.log")))  # noqa: E731
    world = start_world(redis_server.url, ckpt_dir, tmp_path)
    try:
        feed_until(redis_client, 4, world, logs, seed=0)
        assert_global(status(redis_client))  # global counters, written by rank 0 alone
        assert consumers(redis_client) == {"lt-r0", "lt-r1"}

        world[1].kill()
        assert world[1].wait(30) == -signal.SIGKILL
        # Rank 0 sees its peer gone at its next agreement: it does not hang on the collective.
        assert world[0].wait(TIMEOUT_S + 30) == 1, logs()
    finally:
        stop_all(world)
    saved = load_checkpoint(latest_checkpoint(ckpt_dir) or Path("missing"))
    assert saved["learner_steps"] >= 4  # rank 0 checkpointed the last step both ranks finished
    assert_global({**saved, "learner_step": saved["learner_steps"]})
    resumed = saved["learner_steps"]

    restarted = time.time()
    world = start_world(redis_server.url, ckpt_dir, tmp_path)
    try:
        # A heartbeat of the new rank 0 (the hash still holds the old one's), at the checkpoint's step.
        wait_for(
            lambda: status(redis_client),
            lambda f: float(f.get("heartbeat", 0)) > restarted,
            240,
            what="restart",
            guard=lambda: _alive(world, logs),
        )
        assert step(redis_client) == resumed
        # Pause reaches both ranks: with batches waiting on both, no step is taken until resume.
        redis_client.hset(KEYS.state, "paused", "1")
        wait_for(lambda: status(redis_client).get("paused"), lambda p: p == "1", 120)
        produce(redis_client, [rollout(seed=100 + i, returns=(1.0,)) for i in range(8)])
        wait_for(
            lambda: {
                c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(KEYS.rollouts, LEARNER_GROUP)
            },
            lambda held: held.get("lt-r0", 0) > 0 and held.get("lt-r1", 0) > 0,
            60,
            what="both ranks holding",
        )
        time.sleep(1.0)
        assert step(redis_client) == resumed
        redis_client.hset(KEYS.state, "paused", "0")
        feed_until(redis_client, resumed + 3, world, logs, seed=200)
        assert_global(status(redis_client))
        # SIGTERM to rank 1 alone stops the world in order: both exit 0, rank 0 checkpoints.
        world[1].send_signal(signal.SIGTERM)
        assert [proc.wait(60) for proc in world] == [0, 0], logs()
    finally:
        stop_all(world)
    final = load_checkpoint(latest_checkpoint(ckpt_dir) or Path("missing"))
    assert final["learner_steps"] >= resumed + 3
    assert_global({**final, "learner_step": final["learner_steps"]})
    assert int(status(redis_client)["last_checkpoint_step"]) == final["learner_steps"]


def _alive(world: list[subprocess.Popen[bytes]], logs: object) -> None:
    dead = [proc.returncode for proc in world if proc.poll() is not None]
    if dead:
        raise AssertionError(f"a rank exited with {dead}:\n{logs() if callable(logs) else ''}")


@pytest.mark.slow
def test_torchrun_starts_the_ranks(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    """Under torchrun (its agent hosts the rendezvous store) the ranks meet and learn as one."""
    settings = learner_fields(redis_server.url, tmp_path / "ckpt", consumer="tr", batch_size=2, log_format="text")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    env.update({f"IMPALA_{k.upper()}": str(v) for k, v in settings.items()})
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "impala", "learner"]
    log = tmp_path / "torchrun.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        logs = lambda: log.read_text()[-4000:]  # noqa: E731
        feed_until(redis_client, 3, [proc], logs, seed=0)
        assert consumers(redis_client) == {"tr-r0", "tr-r1"}
        assert_global(status(redis_client))
        # SIGTERM to one rank stops both in order; torchrun exits 0 when its workers did.
        (rank,) = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()][:1]
        os.kill(rank, signal.SIGTERM)
        assert proc.wait(90) == 0, logs()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
