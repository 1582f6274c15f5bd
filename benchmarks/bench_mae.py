"""MAE training throughput, peak memory and MFU: selfsup vs Hugging Face ViTMAE (and timm MAE).

Every contender gets the same network (depth, width, heads, MLP, patch, image size, decoder, mask
ratio, norm_pix_loss), the same batch and the same optimizer: AdamW with the engine's parameter
groups (no decay on biases, norms, embeddings), fused kernel for all (the Hugging Face Trainer
default since torch 2.8). Steps are interleaved in one process; see ``common.py``.

    python benchmarks/bench_mae.py --config tiny32 --steps 10 [--compile] [--json]
    python benchmarks/bench_mae.py --config base224 --device cuda   # bf16 autocast on GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import _passive_omp  # noqa: F401  (before torch)
import torch
from common import (
    CONFIGS,
    ModelConfig,
    child_peak_mb,
    heap_malloc,
    interleaved,
    machine,
    mae_train_flops,
    measure_peak_flops,
    paired_ratio,
    peak_rss_mb,
    record,
    reset_peak_rss,
    table,
)
from torch import nn

from selfsup.data.spec import InputSpec, normalize
from selfsup.encoders import EncoderConfig
from selfsup.methods import build_method
from selfsup.train.optim import param_groups

PEERS = ["hf_vitmae", "timm_mae"]


def build_selfsup(c: ModelConfig) -> tuple[nn.Module, Callable]:
    enc = EncoderConfig(size="custom", width=c.width, depth=c.depth, heads=c.heads, patch_size=c.patch_size,
                        mlp_ratio=c.mlp / c.width)
    mae = {"mask_ratio": c.mask_ratio, "decoder_width": c.dec_width, "decoder_depth": c.dec_depth,
           "decoder_heads": c.dec_heads, "norm_pix_loss": True, "augment": "none"}
    model = build_method("mae", mae, enc, InputSpec(channels=c.channels, image_size=c.image_size))
    assert model.decoder_blocks[0].mlp.fc1.out_features == c.dec_mlp, "decoder MLP must match the peers'"
    return model, lambda m, x: m({"image": x})["loss"]


def build_hf(c: ModelConfig) -> tuple[nn.Module, Callable]:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    cfg = ViTMAEConfig(
        hidden_size=c.width, num_hidden_layers=c.depth, num_attention_heads=c.heads, intermediate_size=c.mlp,
        image_size=c.image_size, patch_size=c.patch_size, num_channels=c.channels, qkv_bias=True,
        decoder_hidden_size=c.dec_width, decoder_num_hidden_layers=c.dec_depth,
        decoder_num_attention_heads=c.dec_heads, decoder_intermediate_size=c.dec_mlp,
        mask_ratio=c.mask_ratio, norm_pix_loss=True,
    )
    model = ViTMAEForPreTraining._from_config(cfg, attn_implementation="sdpa")
    return model, lambda m, x: m(pixel_values=normalize(x)).loss


class TimmMAE(nn.Module):
    """facebookresearch/mae ``models_mae.py`` (the reference MAE), built from timm's PatchEmbed and Block."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        norm = partial(nn.LayerNorm, eps=1e-6)
        self.c, N, P = c, c.num_patches, c.patch_size**2 * c.channels
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.channels, c.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.randn(1, N + 1, c.width) * 0.02, requires_grad=False)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp / c.width, qkv_bias=True, norm_layer=norm)
                                    for _ in range(c.depth))
        self.norm = norm(c.width)
        self.decoder_embed = nn.Linear(c.width, c.dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_width))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, N + 1, c.dec_width) * 0.02, requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(c.dec_width, c.dec_heads, c.dec_mlp / c.dec_width, qkv_bias=True, norm_layer=norm)
            for _ in range(c.dec_depth))
        self.decoder_norm = norm(c.dec_width)
        self.decoder_pred = nn.Linear(c.dec_width, P)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        B, p, N, D = imgs.shape[0], self.c.patch_size, self.c.num_patches, self.c.width
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        ids_shuffle = torch.rand(B, N, device=imgs.device).argsort(1)
        ids_restore, keep = ids_shuffle.argsort(1), ids_shuffle[:, : self.c.n_keep]
        x = torch.gather(x, 1, keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(B, N, device=imgs.device)
        mask[:, : self.c.n_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = self.mask_token.repeat(B, N + 1 - x.shape[1], 1)
        x_ = torch.gather(torch.cat([x[:, 1:], tokens], 1), 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        h = imgs.shape[2] // p
        target = imgs.reshape(B, 3, h, p, h, p).permute(0, 2, 4, 3, 5, 1).reshape(B, h * h, -1)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()


def build_timm(c: ModelConfig) -> tuple[nn.Module, Callable]:
    return TimmMAE(c), lambda m, x: m(normalize(x))


BUILDERS = {"selfsup": build_selfsup, "hf_vitmae": build_hf, "timm_mae": build_timm}


def make_step(model: nn.Module, loss_of: Callable, x: torch.Tensor, device: str, fused: bool = True,
              precision: str = "fp32") -> Callable:
    """One optimizer step on the fixed batch ``x``, fp32 or under bf16 autocast."""
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1.5e-3, betas=(0.9, 0.95), fused=fused)
    amp = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())

    def step() -> None:
        with amp:
            loss = loss_of(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def build(name: str, c: ModelConfig, device: str) -> tuple[nn.Module, Callable]:
    torch.manual_seed(0)
    model, loss_of = BUILDERS[name](c)
    return model.to(device).train(), loss_of


def mem_child(name: str, c: ModelConfig, device: str, precision: str) -> None:
    """Child process: peak resident memory (MiB) of building ``name`` and running 2 steps, as the last line."""
    x = torch.rand(c.batch, c.channels, c.image_size, c.image_size, device=device)
    base = reset_peak_rss()
    model, loss_of = build(name, c, device)
    step = make_step(model, loss_of, x, device, precision=precision)
    step()
    step()
    print(peak_rss_mb() - base)


def gpu_peak_mb(step: Callable) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def run(c: ModelConfig, device: str, steps: int, warmup: int = 2, compile_: bool = False, memory: bool = True,
        precision: str = "fp32", clock: str = "wall", malloc: str = "default",
        peak_size: int | None = None) -> tuple[list[dict], list[dict]]:
    """Benchmark every importable contender; returns (table rows, records)."""
    x = torch.rand(c.batch, c.channels, c.image_size, c.image_size, device=device)
    rows, fns, skipped = {}, {}, {}
    for name in ["selfsup", *PEERS]:
        try:
            model, loss_of = build(name, c, device)
        except ImportError as e:
            skipped[name] = f"not importable ({type(e).__name__}: {e})"
            continue
        fns[name] = make_step(model, loss_of, x, device, precision=precision)
        rows[name] = {"library": name, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}
        if name == "selfsup" and compile_:
            cmodel, _ = build(name, c, device)
            cmodel.compile()  # what the engine does with train.compile=true
            fns["selfsup+compile"] = make_step(cmodel, loss_of, x, device, precision=precision)
            t = time.perf_counter()
            fns["selfsup+compile"]()
            rows["selfsup+compile"] = {"library": "selfsup+compile", "params_M": rows[name]["params_M"],
                                       "compile_s": round(time.perf_counter() - t, 1)}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    measure = partial(measure_peak_flops, device, dtype=dtype, clock=clock, size=peak_size,
                      repeats=1 if peak_size else 5)
    peak = measure()
    times = interleaved(fns, steps, warmup, device, clock)
    peak = max(peak, measure())
    flops = mae_train_flops(c)
    records = []
    for name, ts in times.items():
        med = statistics.median(ts)
        ips = c.batch / med
        mfu = flops / med / peak
        mem = None
        if memory and name in BUILDERS:
            mem = gpu_peak_mb(fns[name]) if device.startswith("cuda") else child_peak_mb(
                __file__, ["--mem-child", name, "--config", c.name, "--batch", str(c.batch), "--device", device,
                           "--precision", precision, "--malloc", malloc])
        rows[name] |= {"images_per_s": round(ips, 1), "step_s": round(med, 3), "mfu": round(mfu, 3),
                       "peak_mem_mb": round(mem) if mem is not None else ""}
        std = statistics.pstdev([c.batch / t for t in ts])
        records += [record("mae_train", "images_per_s", ips, name, c.name, std, n_steps=len(ts), estimator="median"),
                    record("mae_train", "mfu", mfu, name, c.name, peak_flops=peak, flops_per_step=flops,
                           flop_count="analytic")]
        if mem is not None:
            how = "cuda max_memory_allocated" if device.startswith("cuda") else "peak RSS over baseline"
            records.append(record("mae_train", "peak_mem_mb", mem, name, c.name, how=how))
    for name in times:
        if name.startswith("selfsup"):
            continue
        r, s = paired_ratio(times["selfsup"], times[name])
        rows[name]["selfsup_speedup"] = round(r, 2)
        records.append(record("mae_train", "ratio_vs_peer", r, name, c.name, s, library="selfsup"))
    if "selfsup+compile" in times:
        r, s = paired_ratio(times["selfsup+compile"], times["selfsup"])
        rows["selfsup+compile"]["selfsup_speedup"] = f"{r:.2f} vs eager"
    for name, why in skipped.items():
        rows[name] = {"library": name, "note": why}
        records.append(record("mae_train", "images_per_s", float("nan"), name, c.name, note=why))
    for r in records:
        r |= {"precision": precision, "clock": clock, "threads": torch.get_num_threads(), "malloc": malloc}
    print(f"# mae_train {c.name} on {device} ({machine()}, {torch.get_num_threads()} threads), {precision}, "
          f"batch {c.batch}, {steps} steps after "
          f"{warmup} warm-up, {clock} clock, {precision} matmul peak {peak / 1e9:.1f} GFLOP/s, "
          f"model {flops / c.batch / 1e9:.3f} GFLOP/image/step", file=sys.stderr)
    return list(rows.values()), records


COLUMNS = ["library", "images_per_s", "selfsup_speedup", "mfu", "peak_mem_mb", "step_s", "params_M", "compile_s",
           "note"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", choices=sorted(CONFIGS), default=None, help="default: base224 on GPU, tiny32 on CPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time selfsup under torch.compile")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU seconds (for a busy machine)")
    ap.add_argument("--malloc", choices=["default", "heap"], default="default",
                    help="heap: glibc keeps freed memory (common.heap_malloc), for every contender alike")
    ap.add_argument("--json", action="store_true", help="print the records as the last line")
    ap.add_argument("--quick-peak", type=int, default=None, metavar="N",
                    help="measure the matmul peak on N x N matrices, once (a dry run's shortcut; MFU then overstated)")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.malloc == "heap":
        heap_malloc()
    precision = a.precision or ("bf16" if a.device.startswith("cuda") else "fp32")
    name = a.config or ("base224" if a.device.startswith("cuda") else "tiny32")
    c = CONFIGS[name]
    if a.batch:
        c = replace(c, batch=a.batch)
    if a.mem_child:
        return mem_child(a.mem_child, c, a.device, precision)
    rows, records = run(c, a.device, a.steps, a.warmup, a.compile, not a.no_memory, precision, a.clock, a.malloc,
                        a.quick_peak)
    print(table(rows, COLUMNS))
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
