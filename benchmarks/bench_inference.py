"""Embedding throughput (eval, no grad): selfsup's ViT vs Hugging Face ViTModel, and our ONNX export.

Same network (depth, width, heads, MLP, patch, image size), same normalised batch, mean-pooled
patch tokens for every contender; calls are interleaved in one process (``common.py``). The
ONNX graph comes from ``selfsup.export.export_onnx`` and runs in onnxruntime's CPU provider.

    python benchmarks/bench_inference.py --config tiny32 --steps 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import _passive_omp  # noqa: F401  (before torch)
import torch
from common import CONFIGS, ModelConfig, interleaved, machine, measure_peak_flops, record, table, vit_infer_flops
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder


def build_selfsup(c: ModelConfig) -> tuple[nn.Module, Callable]:
    enc = EncoderConfig(size="custom", width=c.width, depth=c.depth, heads=c.heads, patch_size=c.patch_size,
                        mlp_ratio=c.mlp / c.width, pool="avg")
    return build_encoder(enc, InputSpec(channels=c.channels, image_size=c.image_size)), lambda m, x: m(x)


def build_hf(c: ModelConfig) -> tuple[nn.Module, Callable]:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=c.width, num_hidden_layers=c.depth, num_attention_heads=c.heads,
                    intermediate_size=c.mlp, image_size=c.image_size, patch_size=c.patch_size,
                    num_channels=c.channels, qkv_bias=True)
    model = ViTModel._from_config(cfg, add_pooling_layer=False, attn_implementation="sdpa")
    return model, lambda m, x: m(pixel_values=x).last_hidden_state[:, 1:].mean(1)


def build_timm(c: ModelConfig) -> tuple[nn.Module, Callable]:
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=c.image_size, patch_size=c.patch_size, embed_dim=c.width, depth=c.depth,
                              num_heads=c.heads, mlp_ratio=c.mlp / c.width, num_classes=0, global_pool="avg")
    return model, lambda m, x: m(x)


BUILDERS = {"selfsup": build_selfsup, "hf_vit": build_hf, "timm_vit": build_timm}


def infer_fn(model: nn.Module, features: Callable, x: torch.Tensor, device: str) -> Callable:
    amp = device.startswith("cuda")

    def call() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            features(model, x)

    return call


def onnx_fn(model: nn.Module, c: ModelConfig, x: torch.Tensor, folder: Path) -> tuple[Callable, float]:
    """An onnxruntime call on our export, and its max abs difference from torch on ``x``."""
    from selfsup.export.onnx import check_onnx, export_onnx, session

    path = export_onnx(model, InputSpec(channels=c.channels, image_size=c.image_size), folder / "vit.onnx")
    sess, feed = session(path, threads=torch.get_num_threads(), spin=False), {"images": x.cpu().numpy()}
    return (lambda: sess.run(None, feed)), check_onnx(model, path, x[:7].cpu())


def run(c: ModelConfig, device: str, steps: int, warmup: int = 2, clock: str = "wall") -> tuple[list[dict], list[dict]]:
    torch.manual_seed(0)
    x = torch.randn(c.batch, c.channels, c.image_size, c.image_size, device=device)
    fns, rows, records = {}, {}, []
    for name, builder in BUILDERS.items():
        try:
            torch.manual_seed(0)
            model, features = builder(c)
        except ImportError as e:
            rows[name] = {"library": name, "note": f"not importable ({type(e).__name__}: {e})"}
            records.append(record("embed_infer", "images_per_s", float("nan"), name, c.name, note=rows[name]["note"]))
            continue
        model = model.to(device).eval()
        fns[name] = infer_fn(model, features, x, device)
        rows[name] = {"library": name}
        if name == "selfsup" and device == "cpu":
            try:
                with tempfile.TemporaryDirectory() as tmp:  # the session keeps the graph in memory
                    fns["selfsup_onnx"], diff = onnx_fn(model, c, x, Path(tmp))
                rows["selfsup_onnx"] = {"library": "selfsup_onnx", "note": f"onnxruntime CPU EP, max |diff| {diff:.1e}"}
            except ImportError as e:
                rows["selfsup_onnx"] = {"library": "selfsup_onnx", "note": f"not importable ({e})"}
    peak = measure_peak_flops(device, clock=clock)
    times = interleaved(fns, steps, warmup, device, clock)
    flops = vit_infer_flops(c)
    base = times["selfsup"]
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median([b / t for b, t in zip(base, ts, strict=True)])  # > 1: faster than selfsup eager
        rows[name] |= {"images_per_s": round(c.batch / med, 1), "vs_selfsup_eager": round(ratio, 2),
                       "mfu": round(flops / med / peak, 3)}
        records.append(record("embed_infer", "images_per_s", c.batch / med, name, c.name,
                              statistics.pstdev([c.batch / t for t in ts]), n_steps=len(ts), estimator="median"))
        if name != "selfsup":
            ours = "selfsup_eager" if name == "selfsup_onnx" else name
            lib = "selfsup_onnx" if name == "selfsup_onnx" else "selfsup"
            r = ratio if name == "selfsup_onnx" else 1 / ratio
            records.append(record("embed_infer", "ratio_vs_peer", r, ours, c.name, library=lib))
    print(f"# embed_infer {c.name} on {device} ({machine()}, {torch.get_num_threads()} threads), "
          f"batch {c.batch}, {steps} calls after {warmup} warm-up",
          file=sys.stderr)
    return list(rows.values()), records


COLUMNS = ["library", "images_per_s", "vs_selfsup_eager", "mfu", "note"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", choices=sorted(CONFIGS), default=None, help="default: base224 on GPU, tiny32 on CPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU seconds (for a busy machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    c = CONFIGS[a.config or ("base224" if a.device.startswith("cuda") else "tiny32")]
    if a.batch:
        c = replace(c, batch=a.batch)
    rows, records = run(c, a.device, a.steps, a.warmup, a.clock)
    for r in records:
        r |= {"clock": a.clock, "threads": torch.get_num_threads()}
    print(table(rows, COLUMNS))
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
