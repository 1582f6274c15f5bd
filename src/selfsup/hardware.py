"""What the machine can do: the one rule that picks the device a job runs on (``resolve_device``),
and the one rule that turns a precision setting into an autocast.

``device`` everywhere (every command that runs a network: ``--device``) is "auto", "cpu", "cuda",
"cuda:N" or "mps". "auto" is the accelerator when one is present (CUDA, then Apple's MPS), else the
CPU. Asking for an accelerator that is not there is a clear error, never a silent CPU run.

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
import os
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


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``--device`` -> the torch device a job runs its network on ("auto"/None: CUDA when present, then
    MPS, else the CPU). Raises ValueError for an unknown name or an accelerator that is not present."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ValueError("--device mps: Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible to torch on this machine (try --device cpu)")
        index = int(name[5:]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    raise ValueError(f"unknown --device {device!r}; choose {DEVICE_CHOICES}")


def lightning_device(device: str | None = "auto") -> dict[str, object]:
    """``--device`` as Lightning Trainer arguments for pretraining: ``{}`` for "auto" (Lightning's own
    choice: the accelerator when present, and every GPU of the machine), else ``accelerator`` and
    ``devices`` ("cuda:2" -> one GPU, index 2; the device is checked with ``resolve_device``)."""
    if device is None or device.strip().lower() == "auto":
        return {}
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return {"accelerator": "gpu", "devices": f"{resolved.index}," if ":" in device else 1}
    return {"accelerator": resolved.type, "devices": 1}


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


__all__ = [
    "CPU_BF16_IN_AUTO", "DEVICE_CHOICES", "PRECISIONS", "autocast", "cpu_has_native_bf16", "lightning_device",
    "resolve_device", "resolve_precision",
]


def memory_bytes() -> int:
    """Memory this process can still take: MemAvailable of /proc/meminfo, else the physical total; 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0
