"""Keep freed memory in the process heap (glibc), for the ``selfsup`` command's training processes.

By default glibc serves every allocation over its mmap threshold (adaptive, up to 32 MB) with a fresh
mapping and unmaps it on free. An MAE step at batch 256 allocates such tensors every step (the
decoder's MLP activations are 34 MB), so each one is faulted in and zeroed by the kernel page by
page: measured here, that matmul ran at 54 GFLOP/s instead of 77, and a whole CPU training step was
1.7-2.2 % slower (BENCHMARKS.md, optimisation log). Setting these parameters turns glibc's adaptive
threshold off for the life of the process, and freed memory is not given back to the system, so the
command line sets it for its own process; a library caller decides for theirs.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """glibc: serve every allocation from the heap and keep freed memory there. False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(_M_TOP_PAD, 256 * 2**20)
    return True


__all__ = ["keep_freed_memory"]
