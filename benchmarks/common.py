"""Shared pieces of the benchmark scripts: configurations, timing, the machine's peak, records.

Timing rule: every contender runs in the same process on the same batch, and their steps are
interleaved (A, B, A, B, ...), so a load spike on a shared machine hits all of them alike. We
report medians over steps, and a ratio as the median of the per-round ratios.
"""

from __future__ import annotations

import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date

import torch

from selfsup.train.heap import keep_freed_memory


@dataclass(frozen=True)
class ModelConfig:
    """One MAE / ViT shape, written out so every library gets exactly the same network."""

    name: str
    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp: int
    dec_width: int
    dec_depth: int
    dec_heads: int
    dec_mlp: int
    batch: int
    mask_ratio: float = 0.75
    channels: int = 3

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_keep(self) -> int:
        # HF ViTMAE keeps int(N * (1 - r)); selfsup rounds; equal for both configs here
        return int(self.num_patches * (1 - self.mask_ratio))


CONFIGS = {
    # the CPU goal: ViT-Tiny, 32x32, patch 4; light decoder
    "tiny32": ModelConfig("tiny32", 32, 4, 192, 12, 3, 768, 128, 4, 4, 512, batch=256),
    # the GPU goal: ViT-B/16 at 224 with the MAE paper's decoder (8 x 512, 16 heads)
    "base224": ModelConfig("base224", 224, 16, 768, 12, 12, 3072, 512, 8, 16, 2048, batch=256),
}


def block_flops(tokens: int, width: int, mlp: int) -> float:
    """Forward FLOPs (2 per multiply-add) of one pre-norm transformer block on one sequence."""
    T, D = tokens, width
    linear = 2 * T * (3 * D * D + D * D + 2 * D * mlp)  # qkv, proj, fc1, fc2
    attention = 2 * 2 * T * T * D  # q k^T and attn v
    return float(linear + attention)


def mae_train_flops(c: ModelConfig) -> float:
    """Model FLOPs of one MAE training step for the whole batch, counted analytically.

    Encoder on the visible tokens (+ CLS), decoder on all tokens (+ CLS), patch embedding on all
    patches, decoder embed / prediction heads; backward counted as 2x forward (so x3 in all).
    Norms, softmax, GELU and the optimizer are not model FLOPs.
    """
    te, td, P = c.n_keep + 1, c.num_patches + 1, c.patch_size**2 * c.channels
    fwd = 2 * c.num_patches * P * c.width  # patch embedding
    fwd += c.depth * block_flops(te, c.width, c.mlp)
    fwd += 2 * te * c.width * c.dec_width  # decoder_embed
    fwd += c.dec_depth * block_flops(td, c.dec_width, c.dec_mlp)
    fwd += 2 * td * c.dec_width * P  # decoder_pred
    return 3.0 * fwd * c.batch


def vit_infer_flops(c: ModelConfig) -> float:
    """Forward FLOPs of the ViT encoder on all tokens for the whole batch."""
    P = c.patch_size**2 * c.channels
    return float(c.batch * (2 * c.num_patches * P * c.width + c.depth * block_flops(c.num_patches + 1, c.width, c.mlp)))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak_flops(device: str, repeats: int = 5, dtype: torch.dtype | None = None, clock: str = "wall",
                       size: int | None = None) -> float:
    """The machine's measured matmul peak (FLOP/s), best of ``repeats``: fp32 on CPU, bf16 on GPU by default.

    With ``clock="cpu"`` the peak is per CPU second of all threads, to match CPU-clock step times.
    ``size`` overrides the square matrices' side (a quick check: smaller underestimates the peak).
    """
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    n, inner = (4096, 1) if device == "cpu" else (8192, 20)
    n = size or n
    now = time.perf_counter if clock == "wall" else time.process_time
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t = now()
        for _ in range(inner):
            a @ b
        sync(device)
        best = min(best, (now() - t) / inner)
    return 2 * n**3 / best


def interleaved(fns: dict[str, Callable[[], None]], steps: int, warmup: int, device: str,
                clock: str = "wall") -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``steps`` rounds of one call each; seconds per call.

    ``clock="cpu"`` counts this process's CPU seconds (all threads) instead of wall time: on a
    shared machine that is the work done, not the share of the cores the scheduler gave us.
    """
    now = time.perf_counter if clock == "wall" else time.process_time
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync(device)
            t = now()
            fn()
            sync(device)
            times[name].append(now() - t)
    return times


def heap_malloc() -> bool:
    """glibc keeps freed memory in the heap (``selfsup.train.heap``, what the ``selfsup`` command sets).

    There is no way back within a process (glibc's adaptive mmap threshold is off for good), so
    compare it across processes.
    """
    return keep_freed_memory()


def paired_ratio(ours: list[float], peer: list[float]) -> tuple[float, float]:
    """Median and spread of per-round speed ratios peer_time / our_time (> 1: we are faster)."""
    r = [p / o for o, p in zip(ours, peer, strict=True)]
    return statistics.median(r), statistics.pstdev(r)


def _status_mb(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak_rss() -> float:
    """Reset this process's peak-RSS mark to the current RSS (Linux); returns the current RSS, MiB.

    Without a reset, ru_maxrss also counts transient peaks from imports; where the reset is not
    allowed we fall back to it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS:")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), MiB."""
    try:
        return _status_mb("VmHWM:")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_peak_mb(script: str, args: list[str]) -> float | None:
    """Run ``script args`` in a fresh process that prints its peak-memory delta (MiB) as its last line.

    ru_maxrss only ever grows, so two models in one process cannot be told apart; one process each.
    """
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"memory child failed: {out.stderr[-2000:]}", file=sys.stderr)
        return None


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or "cpu"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def record(task: str, metric: str, value: float, peer: str, config: str, std: float = 0.0, **extra) -> dict:
    """A result in the foundation issue's record shape (``selfsup.evaluate.records``); NaN -> null."""
    value = float(value)
    return {
        "task": task, "protocol": "benchmark", "encoder": "ssl", "metric": metric,
        "mean": round(value, 6) if value == value else None, "std": round(float(std), 6), "n_seeds": 1,
        "peer": peer, "config": config, "date": date.today().isoformat(), **extra,
    }


def table(rows: list[dict], cols: list[str]) -> str:
    """Rows of dicts -> a Markdown table (the format BENCHMARKS.md uses)."""
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths, strict=True)) + " |"
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(x) for x in cells)])


def config_dict(c: ModelConfig) -> dict:
    return asdict(c)
