"""Will one training step fit in memory? Measured before the first step, on a copy of the method.

A 224-px continued pretraining was killed by the kernel with no warning (issue 23): the encoder
bounds (``encoders.bounds``) count weights and one input, not a step's activations. Here a probe
measures them: the peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``) of
forward + backward of a deep copy of the method on 2 and on 4 samples of a real batch, extrapolated
linearly to the configured batch, plus the optimizer's state (AdamW: two float32 copies of the
trainable weights), times ``MARGIN``. The copy keeps the run's weights, running statistics, EMA
teachers and gradients untouched; the RNG states are restored. Linux only: where ``/proc`` cannot
be read or reset, the check is skipped (``probe_step_bytes`` returns None).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch

from selfsup.data.spec import IMAGE_DTYPES, to_float
from selfsup.hardware import memory_bytes

MARGIN = 1.25  # on the extrapolated step: allocator slack, the loader's batches in flight
PROBE_SIZES = (2, 4)  # samples per probe step; the smaller also is the smallest batch a run is given
MIN_BATCH = 2


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)  # a kernel control, not a result file
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def _slice(batch: dict, n: int) -> dict:
    """The first ``n`` samples of a collated batch, inputs as the engine gives them (images as float)."""
    out = {}
    for k, v in batch.items():
        if k in ("position", "skipped"):
            continue
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            v = v[:n]
            v = to_float(v) if v.dtype in IMAGE_DTYPES else v
        elif isinstance(v, list):
            v = v[:n]
        out[k] = v
    return out


def _peak_of(step: Callable[[], None]) -> int | None:
    if not _reset_peak():
        return None
    step()
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


@dataclasses.dataclass
class StepMemory:
    """Bytes a training step adds to the process: ``fixed`` + ``per_sample`` * batch."""

    fixed: float
    per_sample: float

    def need(self, batch_size: int) -> float:
        return MARGIN * (self.fixed + self.per_sample * batch_size)


def probe_step_bytes(method: torch.nn.Module, batch: dict) -> StepMemory | None:
    """Measure one step's memory on a copy of ``method`` (CPU, train mode) with 2 and 4 samples of
    ``batch``; None where ``/proc`` is unavailable, the batch is too small or the probe step fails."""
    n_batch = len(next((v for v in batch.values() if isinstance(v, torch.Tensor | list)), []))
    if n_batch < PROBE_SIZES[-1] or _status_kib("VmRSS") is None:
        return None
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            probe = copy.deepcopy(method).train()
            base = _status_kib("VmRSS") * 1024

            def step(n: int, net: torch.nn.Module = probe) -> Callable[[], None]:
                def run() -> None:
                    net(_slice(batch, n))["loss"].backward()
                    net.zero_grad(set_to_none=True)
                return run

            step(PROBE_SIZES[0])()  # warm-up: lazy buffers, thread pools
            peaks = [_peak_of(step(n)) for n in PROBE_SIZES]
            del probe, step  # the copy is freed before training starts
        except Exception:  # noqa: BLE001 - a probe that fails must not stop the run; training will say why
            return None
        finally:
            np.random.set_state(np_state)
    if any(p is None for p in peaks):
        return None
    (n0, n1), (p0, p1) = PROBE_SIZES, peaks
    per_sample = max((p1 - p0) / (n1 - n0), 0.0)
    optimizer = 2 * 4 * sum(p.numel() for p in method.parameters() if p.requires_grad)
    fixed = max(p1 - base - per_sample * n1, 0.0) + optimizer
    return StepMemory(fixed=fixed, per_sample=per_sample)


def fit_batch(mem: StepMemory, batch_size: int, available: float) -> int | None:
    """The largest of ``batch_size``, its half, its quarter... (at least ``MIN_BATCH``) whose step fits
    in ``available`` bytes; None if even ``MIN_BATCH`` does not."""
    b = batch_size
    while mem.need(b) > available:
        if b <= MIN_BATCH:
            return None
        b = max(MIN_BATCH, b // 2)
    return b


def check_step_memory(method: torch.nn.Module, batch: dict, batch_size: int,
                      log: Callable[[str], None]) -> int:
    """The batch size to train with: ``batch_size`` when a step fits in the available memory, else the
    largest halving that fits (said in one line). Raises ``ValueError`` (one line) when even a batch of
    ``MIN_BATCH`` does not fit. Skipped (``batch_size`` returned) where the probe cannot measure."""
    available = memory_bytes()
    mem = probe_step_bytes(method, batch) if available else None
    if mem is None:
        return batch_size
    need = mem.need(batch_size)
    gib = 2.0**30
    if need <= available:
        log(f"memory: one step at batch {batch_size} needs about {need / gib:.2f} GiB (measured at "
            f"{' and '.join(map(str, PROBE_SIZES))} samples); {available / gib:.1f} GiB available")
        return batch_size
    b = fit_batch(mem, batch_size, available)
    if b is None:
        raise ValueError(f"one training step needs about {mem.need(MIN_BATCH) / gib:.1f} GiB even at batch "
                         f"{MIN_BATCH} and {available / gib:.1f} GiB is available; refusing (use a smaller "
                         "image size or encoder)")
    log(f"memory: one step at batch {batch_size} needs about {need / gib:.1f} GiB and {available / gib:.1f} GiB "
        f"is available; training with batch {b} (about {mem.need(b) / gib:.1f} GiB)")
    return b


__all__ = ["MARGIN", "MIN_BATCH", "StepMemory", "check_step_memory", "fit_batch", "probe_step_bytes"]
