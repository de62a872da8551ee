"""impala.core.heap: after ``retain_freed_memory`` a multi-megabyte block comes from the heap, not from a
fresh mmap; an operator's GLIBC_TUNABLES wins. Each case runs in a fresh interpreter (the thresholds
are per process and cannot be undone)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

# Counts glibc's mmap-backed blocks (mallinfo2().hblks) around an 8 MB allocation.
PROBE = """
import ctypes, json, sys
from impala.core import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_blocks_for_a_new_block():
    before = libc.mallinfo2().hblks
    block = bytearray(8 << 20)
    during = libc.mallinfo2().hblks
    del block
    return during - before

default = mapped_blocks_for_a_new_block()
applied = heap.retain_freed_memory()
retained = [mapped_blocks_for_a_new_block() for _ in range(3)]
print(json.dumps({"default": default, "applied": applied, "retained": retained}))
"""


def probe(tunables: str | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_large_blocks_come_from_the_heap_after_retain() -> None:
    got = probe()
    assert got["default"] == 1, got  # glibc's default: an 8 MB block is its own mapping
    assert got["applied"] is True
    assert got["retained"] == [0, 0, 0], got  # served from (and returned to) the heap


def test_operator_tunables_win() -> None:
    got = probe("glibc.malloc.mmap_threshold=131072")
    assert got["applied"] is False
    assert got["retained"] == [1, 1, 1], got  # the operator's 128 KiB threshold still maps 8 MB blocks
