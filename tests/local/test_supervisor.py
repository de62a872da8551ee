"""The supervisor with tiny real child processes: restart with backoff, ordered stop, no orphans."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from impala.local.supervisor import Launcher, RestartEvent, Supervisor, spawn
from tests.support import wait_for


def _sh(script: str, log: Path) -> Launcher:
    return lambda: spawn(["/bin/sh", "-c", script], dict(os.environ), log)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_killed_child_is_restarted_and_counted(tmp_path: Path) -> None:
    sup = Supervisor(backoff_base_s=0.05, backoff_cap_s=0.2)
    child = sup.start("svc", _sh("echo up; exec sleep 60", tmp_path / "svc.log"))
    log = tmp_path / "svc.log"
    first_pid = child.pid
    assert first_pid is not None
    wait_for(lambda: "up" in log.read_text())
    os.kill(first_pid, signal.SIGKILL)
    events: list[RestartEvent] = []

    def restarted() -> bool:
        events.extend(sup.poll())
        return any(e.restarted for e in events)

    wait_for(restarted)
    assert sup.restarts() == {"svc": 1}
    assert child.last_exit == -signal.SIGKILL
    assert child.pid != first_pid
    assert child.alive()
    assert [e.restarted for e in events] == [False, True]
    wait_for(lambda: log.read_text().count("up") == 2)  # both lives log to the same file
    sup.stop()
    assert not child.alive()  # both lives logged to the same file


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() -> None:
    sup = Supervisor(backoff_base_s=0.5, backoff_cap_s=4.0)
    assert [sup.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_crash_loop_waits_longer_each_time(tmp_path: Path) -> None:
    now = [0.0]
    sup = Supervisor(backoff_base_s=1.0, backoff_cap_s=8.0, healthy_after_s=100.0, clock=lambda: now[0])
    child = sup.start("crash", _sh("exit 3", tmp_path / "crash.log"))
    waits = []
    for _ in range(4):
        assert child.process is not None
        child.process.wait()
        (died,) = sup.poll()
        assert died.exit_code == 3
        waits.append(died.restart_in_s)
        assert sup.poll() == []  # not before its time
        now[0] += died.restart_in_s
        (restarted,) = sup.poll()
        assert restarted.restarted
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert child.restarts == 4
    assert child.process is not None
    child.process.wait()
    now[0] += 200.0  # it "ran" long enough to count as healthy: the streak is forgotten
    child.started_at = now[0] - 150.0
    (died,) = sup.poll()
    assert died.restart_in_s == 1.0
    sup.stop()


def test_stop_follows_stages_and_leaves_no_orphans(tmp_path: Path) -> None:
    order = tmp_path / "order.txt"
    sup = Supervisor()
    names = ["redis", "learner", "pool", "client"]
    for name in names:
        # Each service has a helper process (like a vector-env worker) and logs when SIGTERM arrives.
        script = f"sleep 60 & trap 'echo {name} >> {order}; exit 0' TERM; while :; do sleep 0.05; done"
        sup.start(name, _sh(script, tmp_path / f"{name}.log"), stop_timeout_s=5.0)
    wait_for(lambda: all(_children_of(c.pid or 0) for c in sup.children.values()))
    helpers = {name: _children_of(c.pid or 0) for name, c in sup.children.items()}
    codes = sup.stop([["client"], ["pool"], ["learner"]])
    assert order.read_text().split() == ["client", "pool", "learner", "redis"]
    assert codes == dict.fromkeys(names, 0)
    assert sup.leftovers() == []
    for pids in helpers.values():
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert sup.poll() == []  # nothing is restarted once stopping


def test_child_ignoring_sigterm_is_killed_after_its_timeout(tmp_path: Path) -> None:
    sup = Supervisor()
    child = sup.start("stubborn", _sh("trap '' TERM; sleep 60 & wait", tmp_path / "s.log"), stop_timeout_s=0.3)
    wait_for(lambda: bool(_children_of(child.pid or 0)))
    codes = sup.stop()
    assert codes["stubborn"] == -signal.SIGKILL
    assert sup.leftovers() == []


def test_children_die_with_the_supervisor(tmp_path: Path) -> None:
    """A SIGKILLed supervisor cannot stop anything; the kernel's parent-death signal does it."""
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from impala.local.supervisor import Launcher, RestartEvent, Supervisor, spawn\n"
        "sup = Supervisor()\n"
        f"c = sup.start('c', lambda: spawn(['sleep', '60'], dict(os.environ), Path({str(tmp_path / 'c.log')!r})))\n"
        f"Path({str(pid_file)!r}).write_text(str(c.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    child_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    wait_for(lambda: not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text())


@pytest.mark.parametrize("name", ["svc"])
def test_duplicate_names_are_refused(tmp_path: Path, name: str) -> None:
    sup = Supervisor()
    sup.start(name, _sh("exec sleep 60", tmp_path / "a.log"))
    with pytest.raises(ValueError, match="already supervised"):
        sup.start(name, _sh("exec sleep 60", tmp_path / "b.log"))
    sup.stop()
