"""What the machine can do, and the one rule that turns a precision setting into an autocast.

``precision`` everywhere (training, fine-tuning, feature extraction) is "fp32", "bf16", "fp16" or
"auto". "auto" means bf16 autocast on a GPU that supports it, and on a CPU only where it has
native bf16 arithmetic (AVX512-BF16 or AMX, read from the CPU's flags, not guessed) *and*
``CPU_BF16_IN_AUTO`` is set: that switch follows a measurement (BENCHMARKS.md, "bf16 on the
CPU"): a same-budget run in bf16 must be faster and lose no accuracy before "auto" may pick it.
Master weights stay fp32; autocast only runs the matmul-heavy ops in bf16.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Set from the same-budget fp32 vs bf16 comparison recorded in BENCHMARKS.md ("bf16 on the CPU"):
# on the Zen 4 benchmark machine bf16 trained 4 % fewer images per CPU-second than fp32 with the
# chosen CIFAR-10 recipe (validation kNN -0.007, linear +0.012), so it is not faster and auto keeps fp32.
CPU_BF16_IN_AUTO = False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 dot products natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16)."""
    try:
        if platform.system() == "Linux":
            text = Path("/proc/cpuinfo").read_text()
            flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
        if platform.system() == "Darwin":
            import subprocess

            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
            return out.stdout.strip() == "1"
    except OSError:
        return False
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """"auto" -> the precision this device should use ("bf16" or "fp32"); other values pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and CPU_BF16_IN_AUTO and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str = "auto") -> Iterator[None]:
    """Autocast for ``precision`` on ``device`` (nothing for fp32)."""
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        yield
        return
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype):
        yield


__all__ = ["CPU_BF16_IN_AUTO", "PRECISIONS", "autocast", "cpu_has_native_bf16", "resolve_precision"]
