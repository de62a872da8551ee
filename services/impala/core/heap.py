"""Keep freed multi-megabyte blocks in the process heap instead of handing them back to the kernel.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised adaptively) with a
fresh ``mmap`` and unmaps it on ``free``, and gives the top of the heap back above
``M_TRIM_THRESHOLD``. Our services allocate such blocks all the time: an 84×84×4 rollout is 2.3 MB per
env slot, serialized, copied into a protobuf arena and into Redis; a weights version is megabytes; a
16-env pixel message is 450 kB. Fresh pages are zeroed by the kernel at first touch, one fault per
4 KiB page, and on the VMs we measured that made writing a fresh 2.3 MB block cost 1.9 ms instead of
0.1 ms for a block the heap reused (docs/adr/0015-heap-retention.md). ``retain_freed_memory`` raises
both thresholds once at service start, so such blocks come from, and go back to, the heap.

Linux with glibc only (a no-op elsewhere). An operator who sets ``glibc.malloc.*`` in ``GLIBC_TUNABLES``
keeps those settings: this module then changes nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit); blocks larger than that
# are rare (a full weights version of a big model) and keep their own mapping.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the top of the heap kept for reuse; beyond this it goes back to the kernel.
TRIM_THRESHOLD_BYTES = 256 << 20


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when both were applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        log.info("malloc thresholds left as GLIBC_TUNABLES sets them")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
    if not applied:
        log.warning("mallopt refused the heap thresholds; large buffers stay mmap-backed")
    return applied
