"""Faults on one running ``impala local`` stack (CartPole, two ActorPools, two env clients of the
test's own): kill -9 of the learner, a hung then killed weight service, a control API restarted
while paused, kill -9 of an ActorPool, and finally SIGTERM of the whole stack. Real processes, real
signals, loopback only. Each scenario ends with the rollout accounting of ``accounting.Ledger``.

The scenarios share the stack in file order; the SIGTERM one ends it, so it comes last.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from impala.core.checkpoints import latest_checkpoint, load_checkpoint

from .accounting import TABLE, Ledger, Row, in_stream, pending_ids, read_ledger
from .harness import alive, client_env_steps, connections, group_members
from .stacks import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENVS = 8  # per env client


def _start_traffic(stack: LocalStack, tag: str) -> None:
    """Two clients, one per pool first (the other pool is each one's fallback)."""
    stack.start_client(f"{tag}-c0", [0, 1], seed=0)
    stack.start_client(f"{tag}-c1", [1, 0], seed=ENVS)
    steps = stack.learner_int("learner_step")
    stack.wait("learning", lambda: stack.learner_int("learner_step") >= steps + 3, 120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("faults") / "run", pools=2)
    try:
        _start_traffic(local, "base")
        yield local
    finally:
        local.close()


def _holding(stack: LocalStack, least: int) -> list[str] | None:
    ids = pending_ids(stack.redis, stack.keys)
    return ids if len(ids) >= least else None


def test_learner_kill9_resumes_from_its_checkpoint_and_reclaims_pending(stack: LocalStack) -> None:
    response = stack.http.post("/v1/checkpoints", params={"wait": "true"})
    assert response.status_code == 201, response.text
    payload = load_checkpoint(Path(response.json()["path"]))
    saved_step, saved_env, saved_version = (int(payload[k]) for k in ("learner_steps", "env_steps", "policy_version"))
    stack.wait("learning past the checkpoint", lambda: stack.learner_int("learner_step") >= saved_step + 5)

    log_offset = len(stack.log("learner"))
    # Killed while it holds at least half a batch unacknowledged (read, not yet learned from).
    half_batch = int(stack.learner_settings["batch_size"]) // 2
    held = stack.wait("the learner to hold entries", lambda: _holding(stack, half_batch))
    killed_at = time.time()
    old = stack.kill("learner")
    dead = stack.learner()  # the last status the dead learner wrote
    stack.wait_restarted("learner", old)

    first: dict[str, str] = {}  # the new learner's first heartbeat
    seen: list[tuple[int, int]] = []  # (learner_step, policy_version) from its later heartbeats

    def learning_again() -> bool:
        status = stack.learner()
        heartbeat = float(status.get("heartbeat", 0))
        if heartbeat <= killed_at:
            return False  # still the dead learner's last heartbeat
        if not first or heartbeat <= float(first["heartbeat"]):
            # The first heartbeat of a new learner is written before its counters are: it can carry
            # the dead learner's learner_step and policy_version (docs/faults.md). Judge the later ones.
            first.update(first or status)
            return False
        seen.append((int(status["learner_step"]), int(status["policy_version"])))
        return seen[-1][0] >= saved_step + 5

    stack.wait("the new learner to learn", learning_again, 120)
    resumed = re.search(r"resumed from checkpoint path=(\S+) learner_step=(\d+) env_steps=(\d+) policy_version=(\d+)",
                        stack.log("learner")[log_offset:])  # fmt: skip
    assert resumed is not None, "the new learner did not resume from a checkpoint"
    assert resumed.group(1) == response.json()["path"]
    assert tuple(int(g) for g in resumed.groups()[1:]) == (saved_step, saved_env, saved_version)
    assert min(step for step, _ in seen) >= saved_step, f"learner step went below the checkpoint: {seen}"
    assert min(version for _, version in seen) >= saved_version, f"policy version went back: {seen}"
    # Every entry the dead learner held is learned from by its successor (acknowledged, so deleted).
    stack.wait("the held entries to be consumed", lambda: not in_stream(stack.redis, stack.keys, held), 60)
    ledger = stack.ledger()
    assert ledger.lost == 0, ledger
    TABLE.add(
        Row(
            "1 learner kill -9",
            ledger,
            notes=f"checkpoint at step {saved_step} (v{saved_version}); killed at step {dead['learner_step']} "
            f"holding {len(held)} pending; resumed at {resumed.group(2)}, all {len(held)} re-read and acked; "
            f"new learner's statuses {seen[0][0]}..{seen[-1][0]}; its first heartbeat said step "
            f"{first['learner_step']} v{first['policy_version']}",
        )
    )


def test_weight_service_hung_then_killed_pools_act_on_and_catch_up(stack: LocalStack) -> None:
    stopped_at = time.time()
    pid = stack.kill("weights", signal.SIGSTOP)
    try:
        stack.wait_reported_since(stopped_at + 1.0)  # a version already received has been applied by then
        frozen, steps = stack.pool_versions(), stack.pool_steps()
        # The learner goes on learning (and numbering versions) and the pools go on acting on old weights.
        ahead = stack.wait(
            "the learner to pass the frozen weights",
            lambda: (v := stack.learner_int("policy_version")) >= max(frozen) + 20 and v,
        )
        stack.wait("env steps on old weights", lambda: stack.pool_steps() >= steps + 4000)
        assert stack.pool_versions() == frozen, "weights moved while the service was stopped"
        acted = stack.pool_steps() - steps
    finally:
        log_offset = len(stack.log("weights"))
        stack.kill("weights", signal.SIGKILL)  # a stopped process dies of SIGKILL too
    stack.wait_restarted("weights", pid)
    target = stack.learner_int("policy_version")
    stack.wait("pools to catch up", lambda: min(stack.pool_versions()) >= target, 60)
    joined = stack.log("weights")[log_offset:]
    for i in range(stack.pools):
        assert f"subscriber joined subscriber=actorpool-{i}" in joined, f"actorpool-{i} did not resubscribe"
    ledger = stack.ledger()
    assert ledger.lost == 0, ledger
    TABLE.add(
        Row(
            "3 weight service SIGSTOP, then kill -9",
            ledger,
            notes=f"while it hung the pools stayed at v{max(frozen)} and took {acted} env steps as the learner "
            f"reached v{ahead}; after the restart both resubscribed and reached the learner's v{target}",
        )
    )


def _frozen_counts(stack: LocalStack) -> tuple[int, int, int, int]:
    ledger = stack.ledger()
    return stack.learner_int("learner_step"), stack.pool_steps(), ledger.produced, ledger.consumed


def _status(stack: LocalStack) -> dict[str, object] | None:
    try:
        response = stack.http.get("/v1/status")
    except httpx.HTTPError:
        return None  # the API is restarting
    if response.status_code != 200:
        return None
    doc: dict[str, object] = response.json()
    return doc


def test_control_api_restarted_while_paused_keeps_the_run_paused(stack: LocalStack) -> None:
    assert stack.http.post("/v1/pause").status_code == 200
    stack.wait("everyone to pause", lambda: stack.learner().get("paused") == "1" and all(
        stack.pool(i).get("paused") == "1" for i in range(stack.pools)))  # fmt: skip
    stack.wait_reported_since(time.time() + 1.0)  # steps and replies in flight land first
    before = _frozen_counts(stack)
    old = stack.kill("control")
    stack.wait_restarted("control", old)
    status = stack.wait("the new control API", lambda: _status(stack), 60)
    assert status["paused"] is True
    stack.wait_reported_since(time.time() + 1.0)
    assert _frozen_counts(stack) == before, "the run moved while paused"
    assert stack.http.post("/v1/resume").status_code == 200
    stack.wait("learning to resume", lambda: stack.learner_int("learner_step") > before[0] + 3)
    stack.wait("acting to resume", lambda: stack.pool_steps() > before[1])
    ledger = stack.ledger()
    assert ledger.lost == 0, ledger
    TABLE.add(
        Row(
            "5 control API kill -9 while paused",
            ledger,
            notes=f"learner step {before[0]}, pool env steps {before[1]}, produced {before[2]} unchanged "
            "across the restart; resume worked",
        )
    )


def test_actorpool_kill9_clients_move_and_only_its_partials_are_lost(stack: LocalStack) -> None:
    stack.stop_clients()
    base = stack.quiesce()
    budget = 12_000  # env steps per client: c0 is still running when its pool dies
    c0 = stack.start_client("p-c0", [0, 1], seed=100, max_steps=budget)
    c1 = stack.start_client("p-c1", [1, 0], seed=200, max_steps=budget)
    steps = stack.pool_int(0, "env_steps")
    stack.wait("c0 on pool 0", lambda: connections(c0))
    stack.wait("c0 to act on pool 0", lambda: stack.pool_int(0, "env_steps") >= steps + 800)
    assert c0.running(), "c0 finished before the fault"
    killed_at = time.time()
    old = stack.kill("actorpool-0")
    stack.wait("c0 to reconnect", lambda: len(connections(c0)) >= 2, 30)
    reconnect = connections(c0)[1]
    landed = [
        f"actorpool-{i}" for i in range(stack.pools) if f"session={reconnect['session']}" in stack.log(f"actorpool-{i}")
    ]
    for client in (c0, c1):
        assert client.popen.wait(120) == 0, client.text()[-2000:]
    stack.clients.clear()
    stack.wait_restarted("actorpool-0", old)
    end = stack.quiesce()
    assert end.ledger.dropped == base.ledger.dropped and end.ledger.shed == base.ledger.shed
    taken = client_env_steps(c0) + client_env_steps(c1)
    reached_redis = (end.learner_env_steps - base.learner_env_steps) + (end.stream_env_steps - base.stream_env_steps)
    lost = taken - reached_redis
    unroll = int(stack.learner_settings["unroll_length"])
    # Lost: what the dead pool had not shipped, at most one rollout (T steps) per env slot it served,
    # plus the step each slot had in flight. Negative would mean duplicates or miscounting.
    assert 0 <= lost <= ENVS * (unroll + 1), f"{taken} env steps taken, {reached_redis} reached Redis"
    assert end.ledger.lost == 0, end.ledger
    TABLE.add(
        Row(
            "2 actorpool kill -9 (1 of 2)",
            end.ledger,
            lost_before_redis=f"{lost} env steps (the dead pool's unfinished rollouts of {ENVS} slots)",
            notes=f"{taken} env steps taken by 2 clients, {reached_redis} in Redis; c0 reconnected "
            f"{reconnect['ts'] - killed_at:.1f} s after the kill to {', '.join(landed)}",
        )
    )
    _start_traffic(stack, "after")


def test_sigterm_of_impala_local_checkpoints_and_leaves_no_process(stack: LocalStack) -> None:
    pids = stack.pids()
    step = stack.learner_int("learner_step")
    writers = [pids["learner"], pids["actorpool-0"], pids["actorpool-1"]]
    last: list[Ledger] = []
    done = threading.Event()

    def watch() -> None:
        # The last reading taken once every rollout writer is gone, before redis stops (it stops last).
        while not done.is_set():
            if not any(alive(pid) for pid in writers):
                try:
                    last.append(read_ledger(stack.redis, stack.keys))
                except Exception:
                    return  # redis is gone
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    signalled = time.time()
    stack.proc.send_signal(signal.SIGTERM)
    code = stack.proc.wait(150)  # the supervisor's own stop bounds add up to 120 s
    exit_s = time.time() - signalled
    done.set()
    watcher.join(5)
    assert code == 0, stack.out.read_text()[-3000:]
    learner_log = stack.log("learner").rsplit("signal received", 1)[-1]
    assert "checkpoint written" in learner_log, "no final checkpoint after SIGTERM"
    final = latest_checkpoint(stack.run_dir / "checkpoints")
    assert final is not None and final.stat().st_mtime >= signalled
    assert load_checkpoint(final)["learner_steps"] >= step
    everyone = [*pids.values(), stack.proc.pid]
    assert [pid for pid in everyone if alive(pid)] == [], "processes outlived impala local"
    assert group_members(everyone) == {}, "processes left in the services' process groups"
    assert last, "no reading of the counters after the pools and learner stopped"
    assert last[-1].lost == 0, last[-1]
    TABLE.add(
        Row(
            "6 SIGTERM of impala local",
            last[-1],
            notes=f"exit 0 after {exit_s:.1f} s; final checkpoint {final.name} (step "
            f"{load_checkpoint(final)['learner_steps']}); {len(everyone)} PIDs and their groups gone; the "
            f"{last[-1].in_stream} rollouts still in the stream went with impala local's non-persistent redis",
        )
    )
