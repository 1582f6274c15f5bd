"""PatchCore on the magnetic tiles (Huang et al. 2018): image and pixel AUROC, overall and per defect.

Fits on the 762 normal tiles of ``train/good`` and scores the 582 test tiles (190 good, 392
defective in five types), with three feature extractors side by side:

- ``raw``: raw pixel patches (each p x p patch with its 3x3 neighbours), the baseline;
- ``random``: a randomly initialised ViT-Tiny (mid-depth blocks), the floor for any encoder;
- ``ssl``: each ``--encoder RUN/encoder.safetensors`` given (a pretrained run's encoder).

    .venv/bin/python benchmarks/anomaly_magnetic_tile.py [--image-size 64] [--encoder RUN/encoder.safetensors]

``load_encoder`` is the one place that knows the run folder's file; ``main(load=...)`` takes any
callable path -> VisionTransformer instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from selfsup.data.mvtec import load_mvtec
from selfsup.encoders.vit import PRESETS, VisionTransformer, vit
from selfsup.evaluate.anomaly import PatchCore, anomaly_records

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "magnetic_tile"


def load_encoder(path: str | Path, heads: int | None = None) -> VisionTransformer:
    """A ViT from ``encoder.safetensors``: built from the metadata "encoder_config" and
    "input_spec" (JSON) when present, else from the shapes in the state dict (timm names); the
    shapes do not tell the number of heads, which is then ``heads`` or the timm preset's for the width."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    if "encoder_config" in meta:
        from selfsup.data.spec import InputSpec
        from selfsup.encoders import EncoderConfig, build_encoder

        spec = InputSpec(**json.loads(meta["input_spec"])) if "input_spec" in meta else None
        cfg = EncoderConfig(**json.loads(meta["encoder_config"]))
        if spec is None:
            w = state["patch_embed.proj.weight"]
            spec = InputSpec(channels=w.shape[1], image_size=_img_size(state))
        model = build_encoder(cfg, spec)
    else:
        width, chans, p, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        if heads is None:
            heads = next((v["heads"] for v in PRESETS.values() if v["width"] == width), max(1, width // 64))
            print(f"{path}: no encoder_config in the metadata; assuming {heads} heads (--heads to change)")
        model = vit("custom", img_size=_img_size(state), patch_size=p, in_chans=chans, width=width,
                    depth=depth, heads=heads)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("head")] or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _img_size(state: dict) -> int:
    p = state["patch_embed.proj.weight"].shape[-1]
    return int(round((state["pos_embed"].shape[1] - 1) ** 0.5)) * p


def table(results: dict[str, list[dict]], counts: dict[str, int]) -> str:
    """Rows: defect types and "all"; columns: image / pixel AUROC of each extractor."""
    names = list(results)
    head = f"{'defect':10s} {'n':>4s}  " + "  ".join(f"{n + ' img':>11s} {n + ' pix':>11s}" for n in names)
    lines = [head, "-" * len(head)]
    defects = [r["defect"] for r in results[names[0]] if r["metric"] == "image_auroc"]
    for d in defects:
        cells = []
        for n in names:
            by = {r["metric"]: r["mean"] for r in results[n] if r["defect"] == d}
            cells.append(f"{by['image_auroc']:11.3f} {by['pixel_auroc']:11.3f}")
        lines.append(f"{d:10s} {counts[d]:4d}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None, load: Callable[..., VisionTransformer] = load_encoder) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="MVTec-AD style folder")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=8, help="ViT patch size of the random ViT and raw patches")
    ap.add_argument("--coreset", type=float, default=0.1, help="memory bank as a fraction of training patches")
    ap.add_argument("--encoder", action="append", default=[], help="encoder.safetensors of a run (repeatable)")
    ap.add_argument("--heads", type=int, help="attention heads, for an encoder file without its config")
    ap.add_argument("--no-random", action="store_true", help="skip the random-ViT row")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-pixel baseline")
    ap.add_argument("--json", help="write the metrics.json records to this file")
    args = ap.parse_args(argv)
    if not Path(args.data, "train").is_dir():
        raise SystemExit(f"no magnetic tile data at {args.data} (see ../shared/data/README.md)")

    t0 = time.time()
    train = load_mvtec(args.data, "train", args.image_size)
    test = load_mvtec(args.data, "test", args.image_size)
    print(f"loaded {len(train)} train / {len(test)} test tiles at {args.image_size}px in {time.time() - t0:.1f}s")

    extractors: dict[str, Callable[[], VisionTransformer | None]] = {}
    if not args.no_raw:
        extractors["raw"] = lambda: None
    if not args.no_random:

        def random_vit() -> VisionTransformer:
            torch.manual_seed(0)
            return vit("tiny", img_size=args.image_size, patch_size=args.patch_size, in_chans=train.images.shape[1])

        extractors["random"] = random_vit
    for i, path in enumerate(args.encoder):
        extractors["ssl" if len(args.encoder) == 1 else f"ssl{i}"] = lambda path=path: load(path, heads=args.heads)

    results, records = {}, []
    for name, make in extractors.items():
        encoder = make()
        t = time.time()
        model = PatchCore(pixel_patch=args.patch_size, coreset_size=args.coreset).fit(encoder, train.images)
        t_fit = time.time() - t
        scores, heatmaps = model.score(test.images)
        t_score = time.time() - t - t_fit
        results[name] = anomaly_records("magnetic_tile", test, scores, heatmaps, name)
        for r in results[name]:
            r.update(image_size=args.image_size, coreset=args.coreset, memory_bank=len(model.memory_bank))
        records += results[name]
        what = "raw pixel patches" if encoder is None else f"ViT blocks {model.layers}"
        print(f"{name}: {what}, bank {tuple(model.memory_bank.shape)}, fit {t_fit:.1f}s, score {t_score:.1f}s")

    counts = {"all": len(test), **{d: test.defect.count(d) for d in test.defect_types}}
    print()
    print(table(results, counts))
    print(f"\n{platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"total {time.time() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
