"""Where an MAE training step spends its time: torch.profiler, grouped into kinds of work.

    python benchmarks/profile_mae.py [--peer hf_vitmae] [--batch 256] [--steps 2] [--threads N]

Prints the share of forward / backward / optimizer time, then self CPU time by kind of op
(matmul, attention, norms, GELU, copies, reductions, elementwise) and the top ops.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace

import _passive_omp  # noqa: F401  (before torch)
import torch
from bench_mae import BUILDERS, build
from common import CONFIGS
from torch.profiler import ProfilerActivity, profile, record_function

from selfsup.hardware import autocast
from selfsup.train.optim import param_groups

KINDS = [  # first match wins
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "convolution")),
    ("attention", ("scaled_dot_product", "attention")),
    ("layer_norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("copies (copy/cat/gather/scatter)", ("copy_", "cat", "gather", "scatter", "index", "clone", "stack")),
    ("reductions (sum/mean/var)", ("aten::sum", "aten::mean", "aten::var", "aten::std")),
    ("fill/zero", ("fill_", "zero_")),
    ("optimizer kernels", ("_fused_adamw", "addcdiv", "addcmul", "lerp", "sqrt", "_foreach")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::pow", "aten::neg", "aten::rsub")),
]


def kind_of(op: str) -> str:
    for kind, keys in KINDS:
        if any(k in op for k in keys):
            return kind
    return "other"


def profile_step(name: str, batch: int, steps: int, fused: bool, precision: str = "fp32") -> None:
    c = replace(CONFIGS["tiny32"], batch=batch)
    model, loss_of = build(name, c, "cpu")
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1.5e-3, betas=(0.9, 0.95), fused=fused)
    x = torch.rand(c.batch, c.channels, c.image_size, c.image_size)

    def step() -> None:
        with record_function("## forward"), autocast("cpu", precision):
            loss = loss_of(model, x)
        opt.zero_grad(set_to_none=True)
        with record_function("## backward"):
            loss.backward()
        with record_function("## optimizer"):
            opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / steps / 1e3 for e in events if e.key.startswith("## ")}
    print(f"\n== {name}, batch {batch}, fused AdamW {fused}, {precision}: ms per step by phase ==")
    for k, v in phases.items():
        print(f"{k[3:]:<12}{v:9.1f}")
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        if not e.key.startswith("## "):
            by_kind[kind_of(e.key)] += e.self_cpu_time_total / steps / 1e3
    total = sum(by_kind.values())
    print("-- self CPU ms per step by kind --")
    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{k:<36}{v:9.1f}  {100 * v / total:5.1f}%")
    print(events.table(sort_by="self_cpu_time_total", row_limit=18))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=[k for k in BUILDERS if k != "selfsup"], default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--unfused", action="store_true", help="plain for-loop AdamW (the engine's CPU default before)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast of the forward pass")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in ["selfsup"] + ([a.peer] if a.peer else []):
        profile_step(name, a.batch, a.steps, not a.unfused, a.precision)


if __name__ == "__main__":
    main()
