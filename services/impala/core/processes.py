"""Stopping a child that leads its own process group (started with ``start_new_session=True``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM the child (its orderly stop); past ``timeout_s``, SIGKILL its whole process group.
    Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL the child's process group at once; returns the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
