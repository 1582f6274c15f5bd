"""Each MAE speed optimisation, before and after, measured in the same run (interleaved steps).

    python benchmarks/ablate_mae.py [--steps 10] [--batch 256] [--compile] [--bf16]

Variants, each adding one change to the one before:
  before        the code before this work: qkv split by permute + unbind, for-loop AdamW (the
                engine's CPU default), eager
  split_qkv     Attention splits qkv with split + view (``encoders/vit.py``)
  visible_patches  patch embedding as patchify + matmul, run on the visible patches only, instead of
                a strided convolution on all patches followed by a gather of the tokens
  fused_adamw   AdamW(fused=True) on CPU as well
  compile       torch.compile of the method (``train.compile=true``); compile time reported
  (bf16)        CPU bf16 autocast: a different precision, so not in the peer comparison
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import replace

import _passive_omp  # noqa: F401  (before torch)
import torch
import torch.nn.functional as F
from bench_mae import build
from common import CONFIGS, heap_malloc, interleaved, mae_train_flops, measure_peak_flops, paired_ratio, record, table
from torch import nn

from selfsup.data.spec import normalize
from selfsup.encoders.layers import Attention, PatchEmbed
from selfsup.methods.mae import MAE, mae_loss, patchify, random_masking
from selfsup.train.optim import param_groups


def permute_attention(self: Attention, x: torch.Tensor, return_attention: bool = False):
    """``Attention.forward`` as it was before: qkv by permute + unbind (SDPA path only)."""
    B, T, D = x.shape
    q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    return self.proj(out.transpose(1, 2).reshape(B, T, D))


def conv_patch_embed(self: PatchEmbed, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``PatchEmbed.forward`` as it was before: a strided convolution on all patches."""
    return self.proj(x).flatten(2).transpose(1, 2)


def embed_all_forward(self: MAE, batch: dict, mask_ratio: float | None = None) -> dict:
    """``MAE.forward`` as it was before (no augmentation): embed all patches, then gather the visible tokens."""
    x = normalize(batch["image"])
    tokens = self.encoder.embed_patches(x)
    B, N, _ = tokens.shape
    keep, mask, restore = random_masking(B, N, self.cfg.mask_ratio, device=x.device)
    latent = self.encoder.forward_tokens(tokens, keep)
    pred = self.decode(latent, restore)
    return {"loss": mae_loss(pred, patchify(x, self.patch_size), mask, self.cfg.norm_pix_loss)}


def variant(model: nn.Module, loss_of: Callable, x: torch.Tensor, *, old_attention: bool, old_patches: bool,
            fused: bool, bf16: bool = False) -> Callable:
    """A training step for ``model`` with the chosen parts reverted to the code before this work."""
    for m in model.modules():
        if old_attention and isinstance(m, Attention):
            m.forward = types.MethodType(permute_attention, m)
        if old_patches and isinstance(m, PatchEmbed):
            m.forward = types.MethodType(conv_patch_embed, m)
    if old_patches:
        model.forward = types.MethodType(embed_all_forward, model)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1.5e-3, betas=(0.9, 0.95), fused=fused,
                            foreach=None if fused else False)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with amp:
            loss = loss_of(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def child(malloc: str, c, steps: int, warmup: int, clock: str) -> None:
    """Child process: step times of the final eager variant with glibc malloc ``malloc``, as JSON."""
    if malloc == "heap":
        heap_malloc()
    x = torch.rand(c.batch, c.channels, c.image_size, c.image_size)
    step = variant(*build("selfsup", c, "cpu"), x, old_attention=False, old_patches=False, fused=True)
    print(json.dumps(interleaved({"s": step}, steps, warmup, "cpu", clock)["s"]))


def malloc_ab(a: argparse.Namespace, blocks: int = 2) -> tuple[list[float], list[float]]:
    """Default vs heap malloc, each in fresh processes (the setting is per process), blocks alternating."""
    times: dict[str, list[float]] = {"default": [], "heap": []}
    for _ in range(blocks):
        for mode in times:
            args = ["--child", mode, "--steps", str(max(3, a.steps // 2)), "--warmup", str(a.warmup),
                    "--batch", str(a.batch), "--clock", a.clock, *(["--threads", str(a.threads)] if a.threads else [])]
            out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
            times[mode] += json.loads(out.stdout.strip().splitlines()[-1])
    return times["default"], times["heap"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU seconds (for a busy machine)")
    ap.add_argument("--no-malloc", action="store_true", help="skip the glibc malloc A/B (4 child processes)")
    ap.add_argument("--bf16", action="store_true", help="also time CPU bf16 autocast (informative)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["default", "heap"], default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    c = replace(CONFIGS["tiny32"], batch=a.batch)
    if a.child:
        return child(a.child, c, a.steps, a.warmup, a.clock)
    x = torch.rand(c.batch, c.channels, c.image_size, c.image_size)
    plan = {"before": dict(old_attention=True, old_patches=True, fused=False),
            "split_qkv": dict(old_attention=False, old_patches=True, fused=False),
            "visible_patches": dict(old_attention=False, old_patches=False, fused=False),
            "fused_adamw": dict(old_attention=False, old_patches=False, fused=True)}
    if a.bf16:
        plan["bf16_autocast"] = dict(old_attention=False, old_patches=False, fused=True, bf16=True)
    fns, extra = {}, {}
    for name, opts in plan.items():
        fns[name] = variant(*build("selfsup", c, "cpu"), x, **opts)
    if a.compile:
        model, loss_of = build("selfsup", c, "cpu")
        model.compile()
        fns["compile"] = variant(model, loss_of, x, old_attention=False, old_patches=False, fused=True)
        t = time.perf_counter()
        fns["compile"]()
        extra["compile"] = {"compile_s": round(time.perf_counter() - t, 1)}
    peak = measure_peak_flops("cpu", clock=a.clock)
    times = interleaved(fns, a.steps, a.warmup, "cpu", a.clock)
    flops = mae_train_flops(c)
    rows, records = [], []
    for i, (name, ts) in enumerate(times.items()):
        med = statistics.median(ts)
        row = {"variant": name, "images_per_s": round(c.batch / med, 1), "mfu": round(flops / med / peak, 3),
               "vs_before": round(paired_ratio(ts, times["before"])[0], 3), **extra.get(name, {})}
        if i > 0:
            prev = "fused_adamw" if name in ("compile", "bf16_autocast") else list(times)[i - 1]
            row["vs_previous"] = f"{paired_ratio(ts, times[prev])[0]:.3f} vs {prev}"
        rows.append(row)
    if not a.no_malloc:
        default, heap = malloc_ab(a)
        d, h = statistics.median(default), statistics.median(heap)
        rows.append({"variant": "heap_malloc (own processes)", "images_per_s": round(c.batch / h, 1),
                     "vs_previous": f"{d / h:.3f} vs same code, default malloc ({c.batch / d:.1f} img/s)",
                     "vs_before": f"~{d / h * rows[3]['vs_before']:.3f}", "mfu": round(flops / h / peak, 3)})
    for row in rows:
        records.append(record("mae_train_ablation", "images_per_s", row["images_per_s"], "selfsup", c.name,
                              variant=row["variant"], vs_before=row["vs_before"], vs_previous=row.get("vs_previous"),
                              clock=a.clock, threads=torch.get_num_threads()))
    print(f"# tiny32 batch {c.batch}, {a.steps} steps, {torch.get_num_threads()} threads, {a.clock} clock, "
          f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(table(rows, ["variant", "images_per_s", "vs_previous", "vs_before", "mfu", "compile_s"]))
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
