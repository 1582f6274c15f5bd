"""The ``selfsup`` command keeps freed memory in the heap (``train/heap.py``): check glibc obeys."""

import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from selfsup.train.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss_mb()
x = torch.ones(64 * 2**20 // 4)  # 64 MB, over glibc's default mmap threshold
del x
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_large_tensor_stays_in_the_heap_only_when_asked():
    def grown(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    assert grown("default") < 16  # an mmap, returned to the system on free
    assert grown("keep") > 48  # kept in the heap for the next step's tensor of that size
