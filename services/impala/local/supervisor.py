"""A small process supervisor that treats child services the way Kubernetes treats pods.

A child that exits is restarted after a capped exponential delay (like CrashLoopBackOff: no jitter,
one process per name); the delay resets once a child has stayed up for ``healthy_after_s``. Every
restart is logged and counted. Each child runs in its own session, so it is also its own process
group: signals reach its helper processes (vector-env workers, ...) and a terminal's Ctrl-C reaches
only us, which lets ``stop`` shut services down in a chosen order. On Linux children also receive
SIGTERM when the supervisor itself dies (``PR_SET_PDEATHSIG``), so even a SIGKILLed ``impala local``
leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from impala.core.processes import group_members, proc_stat

log = logging.getLogger(__name__)

Launcher = Callable[[], "subprocess.Popen[bytes]"]
_PR_SET_PDEATHSIG = 1


def _death_signal_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking the kernel to SIGTERM the child when we die (Linux only).

    libc is resolved here, in the parent: between fork and exec the child should only make the call.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_death_signal_hook(),
        )


@dataclass
class Child:
    """One supervised service: how to start it and what happened to it so far."""

    name: str
    launch: Launcher
    stop_timeout_s: float
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    pgids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class RestartEvent:
    """A child was found dead (``restart_in_s`` > 0 pending) or was started again (``restarted``)."""

    name: str
    exit_code: int | None
    restarts: int
    restart_in_s: float
    restarted: bool


class Supervisor:
    """Starts, watches, restarts and stops named child processes. Not thread-safe: one owner calls it.

    Args:
        backoff_base_s: delay before the first restart of a child.
        backoff_cap_s: largest delay; it doubles per consecutive failure up to this.
        healthy_after_s: a child up this long has its failure streak forgotten.
        clock: monotonic time source (injected by tests).
    """

    def __init__(
        self,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        healthy_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.healthy_after_s = healthy_after_s
        self.clock = clock
        self.children: dict[str, Child] = {}
        self.stopping = False

    def start(self, name: str, launch: Launcher, stop_timeout_s: float = 10.0) -> Child:
        """Launch a new child now (raises whatever the launcher raises)."""
        if name in self.children:
            raise ValueError(f"a child named {name!r} is already supervised")
        child = Child(name=name, launch=launch, stop_timeout_s=stop_timeout_s)
        self.children[name] = child
        self._launch(child)
        return child

    def _launch(self, child: Child) -> None:
        child.process = child.launch()
        child.pgids.add(child.process.pid)
        child.started_at = self.clock()
        child.restart_at = None
        log.info("started", extra={"service": child.name, "pid": child.process.pid, "restarts": child.restarts})

    def delay(self, failures: int) -> float:
        """Wait before restart number ``failures`` of a streak (1-based)."""
        return float(min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(failures - 1, 32)))

    def poll(self) -> list[RestartEvent]:
        """Reap dead children and restart those whose delay has passed; call it often."""
        events: list[RestartEvent] = []
        if self.stopping:
            return events
        now = self.clock()
        for child in self.children.values():
            if child.restart_at is None and child.process is not None and child.process.poll() is not None:
                events.append(self._died(child, now))
            if child.restart_at is not None and now >= child.restart_at:
                events.append(self._restart(child))
        return events

    def _died(self, child: Child, now: float) -> RestartEvent:
        assert child.process is not None
        child.last_exit = child.process.returncode
        _kill_group(child.process.pid)  # helpers of the dead process go with it, as in a pod
        if now - child.started_at >= self.healthy_after_s:
            child.failures = 0
        child.failures += 1
        wait = self.delay(child.failures)
        child.restart_at = now + wait
        log.warning(
            "service exited; restarting after backoff",
            extra={"service": child.name, "exit_code": child.last_exit, "restart_in_s": wait},
        )
        return RestartEvent(child.name, child.last_exit, child.restarts, wait, restarted=False)

    def _restart(self, child: Child) -> RestartEvent:
        child.restarts += 1
        try:
            self._launch(child)
        except Exception as err:  # a launcher that fails is one more failure, not the end of the run
            child.failures += 1
            child.restart_at = self.clock() + self.delay(child.failures)
            log.warning("restart failed", extra={"service": child.name, "error": str(err)})
            return RestartEvent(child.name, None, child.restarts, self.delay(child.failures), restarted=False)
        log.warning("service restarted", extra={"service": child.name, "restarts": child.restarts})
        return RestartEvent(child.name, child.last_exit, child.restarts, 0.0, restarted=True)

    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.children.items() if c.pid is not None and c.alive()}

    def restarts(self) -> dict[str, int]:
        return {name: c.restarts for name, c in self.children.items()}

    def stop(self, stages: Iterable[Sequence[str]] = (), *, rest: bool = True) -> dict[str, int | None]:
        """Stop children stage by stage; with ``rest``, then every other child in reverse start order.

        In each stage all children get SIGTERM together, then up to their ``stop_timeout_s`` to exit,
        then SIGKILL (the whole process group). No child is restarted once stopping has begun.
        Returns each child's exit code (None while one is still running).
        """
        self.stopping = True
        order = [list(stage) for stage in stages]
        if rest:
            named = {name for stage in order for name in stage}
            order += [[name] for name in reversed(self.children) if name not in named]
        for stage in order:
            _stop_stage([self.children[name] for name in stage if name in self.children])
        return {name: (c.process.poll() if c.process else None) for name, c in self.children.items()}

    def leftovers(self) -> list[int]:
        """Process groups of children that still hold a live process (should be empty after stop)."""
        return [pgid for child in self.children.values() for pgid in sorted(child.pgids) if _group_alive(pgid)]


def _stop_stage(children: list[Child]) -> None:
    running = [c for c in children if c.alive()]
    for child in running:
        assert child.process is not None
        log.info("stopping", extra={"service": child.name, "pid": child.process.pid})
        _signal_group(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + max((c.stop_timeout_s for c in running), default=0.0)
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing", extra={"service": child.name, "pid": child.process.pid})
    for child in children:
        for pgid in child.pgids:
            _kill_group(pgid)
        if child.process is not None:
            child.process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_group(pgid: int, settle_s: float = 2.0) -> None:
    """SIGKILL whatever is left in a process group and wait (briefly) until it is gone."""
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + settle_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    return any(_state(pid) not in ("Z", "X", "") for pid in group_members(pgid))


def _state(pid: int) -> str:
    fields = proc_stat(pid)
    return fields[0] if fields is not None else ""
