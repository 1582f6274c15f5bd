"""How the defaults of `selfsup pretrain` + `selfsup anomaly fit|score` were chosen, without the test set.

The magnetic tiles have no defective training images, so the choice is made on a validation set
built from `train/good` alone (the test split is never read):

1. `train/good` is split, seeded, into a fit part (80 %) and a held-out part (20 %).
2. Each held-out tile gets one synthetic defect drawn at its own resolution, cycling through three
   generic kinds fixed before any score was seen (none of them modelled on the test defects):
   a dark or bright elliptical blob, a thin dark or bright scratch, and a patch cut from another
   fit tile and pasted (CutPaste, Li et al. 2021). Validation = held-out clean vs held-out defective.
3. For each candidate (the two geometry rules `encoders.sizing` could follow on a CPU: the
   smallest patch with the side capped at 8 patches, 32 px at 4-px patches; or the largest side
   whose patch pixels fit the width, 64 px at 8-px patches; and the latter with a CPU-sized model
   and batch) the plain command pretrains MAE on the fit part (`--budget`, shorter than the real
   10 minutes: a proxy, the same for all), then
   PatchCore is fitted on the fit part with and without per-image standardisation and scores the
   validation set through the same API the commands use. Raw pixel patches are the reference.
4. The candidate with the best validation image AUROC is printed as the choice.

    .venv/bin/python benchmarks/choose_anomaly_defaults.py --budget 4m     # ~16 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "magnetic_tile"
# candidate (name, image side, patch, extra pretraining overrides): the two geometry rules with the
# library's model defaults (ViT-Tiny, 12 blocks, batch 256), and the 64-px rule with a CPU-sized
# model and batch (6 blocks, batch 64: four times the steps in the same budget)
CANDIDATES = [("32px-p4", 32, 4, []), ("64px-p8", 64, 8, []),
              ("64px-p8-depth6-b64", 64, 8, ["encoder.depth=6", "train.batch_size=64"])]
KINDS = ("blob", "scratch", "cutpaste")


def synthetic_defect(img: Image.Image, donor: Image.Image, kind: str, rng: np.random.Generator
                     ) -> tuple[Image.Image, Image.Image]:
    """(defective grey image, mask "L" 255 = defect) at the image's own resolution."""
    a = np.asarray(img.convert("L"), np.float32)
    h, w = a.shape
    s = min(h, w)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "blob":
        rx, ry = rng.uniform(0.03, 0.10, 2) * s
        cx, cy = rng.uniform(rx, w - rx), rng.uniform(ry, h - ry)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "scratch":
        length, angle = rng.uniform(0.2, 0.5) * s, rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.25 * h, 0.75 * h)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=int(rng.integers(1, 4)))
    else:
        d = np.asarray(donor.convert("L").resize((w, h), Image.BILINEAR), np.float32)
        side = int(rng.uniform(0.08, 0.2) * s)
        y0, x0 = rng.integers(0, h - side), rng.integers(0, w - side)
        y1, x1 = rng.integers(0, h - side), rng.integers(0, w - side)
        out = a.copy()
        out[y1:y1 + side, x1:x1 + side] = d[y0:y0 + side, x0:x0 + side]
        draw.rectangle([x1, y1, x1 + side - 1, y1 + side - 1], fill=255)
        return Image.fromarray(out.clip(0, 255).astype(np.uint8)), mask
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.0)), np.float32) / 255.0
    delta = rng.uniform(0.15, 0.35) * 255 * rng.choice([-1.0, 1.0])
    return Image.fromarray((a + delta * soft).clip(0, 255).astype(np.uint8)), mask


def build_validation(data: Path, root: Path, seed: int, held_out: float) -> dict[str, int]:
    """An MVTec-layout folder from train/good only: train/good (fit part), test/good (held-out),
    test/synthetic + ground_truth/synthetic (the held-out tiles with one synthetic defect each)."""
    files = sorted((data / "train" / "good").glob("*.png"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    n_val = int(round(held_out * len(files)))
    val, fit = [files[i] for i in order[:n_val]], [files[i] for i in order[n_val:]]
    for sub in ("train/good", "test/good", "test/synthetic", "ground_truth/synthetic"):
        (root / sub).mkdir(parents=True)
    for f in fit:
        (root / "train" / "good" / f.name).symlink_to(f)
    for i, f in enumerate(val):
        (root / "test" / "good" / f.name).symlink_to(f)
        donor = Image.open(fit[int(rng.integers(len(fit)))])
        bad, mask = synthetic_defect(Image.open(f), donor, KINDS[i % len(KINDS)], rng)
        bad.save(root / "test" / "synthetic" / f.name)
        mask.save(root / "ground_truth" / "synthetic" / f"{f.stem}_mask.png")
    return {"fit": len(fit), "held_out": len(val)}


def image_auroc(records: list[dict]) -> float:
    return next(r["mean"] for r in records if r["metric"] == "image_auroc" and r["defect"] == "all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--budget", default="4m", help="MAE pretraining budget per candidate geometry")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=float, default=0.2)
    ap.add_argument("--out", type=Path, help="keep the validation folder and runs here")
    ap.add_argument("--json", type=Path, help="write the table here")
    a = ap.parse_args()
    if not (a.data / "train" / "good").is_dir():
        raise SystemExit(f"no magnetic tiles at {a.data} (see ../shared/data/README.md)")
    from selfsup import api

    work = a.out or Path(tempfile.mkdtemp(prefix="selfsup-choose-"))
    quiet = lambda m: None  # noqa: E731
    try:
        counts = build_validation(a.data, work / "val", a.seed, a.held_out)
        print(f"validation from train/good only: fit {counts['fit']}, held-out {counts['held_out']} clean + "
              f"{counts['held_out']} with a synthetic defect ({', '.join(KINDS)})", flush=True)
        rows = []
        raw_done: set[tuple[int, int]] = set()
        for name, size, patch, extra in CANDIDATES:
            t0 = time.monotonic()
            run = api.pretrain(str(work / "val" / "train" / "good"), "mae", out=work / f"mae-{name}",
                               budget=a.budget, log=quiet,
                               overrides=[f"data.image_size={size}", f"encoder.patch_size={patch}", *extra])
            steps = next(r["mean"] for r in json.loads((run / "metrics.json").read_text()) if r["metric"] == "steps")
            for norm in ("none", "image"):
                bank = api.anomaly_fit(run, str(work / "val"), normalize=norm, out=work / f"bank-{name}-{norm}",
                                       log=quiet)
                recs = api.anomaly_score(bank, str(work / "val"), report=False, log=quiet)
                rows.append({"features": f"MAE {name}", "normalize": norm, "image_auroc": image_auroc(recs),
                             "pretrain_steps": int(steps)})
                if (size, patch, norm) in raw_done:
                    continue
                raw_done.add((size, patch, norm))
                raw = api.anomaly_fit(None, str(work / "val"), image_size=size, pixel_patch=patch, normalize=norm,
                                      out=work / f"raw-{name}-{norm}", log=quiet)
                rows.append({"features": f"raw {size}px-p{patch}", "normalize": norm,
                             "image_auroc": image_auroc(api.anomaly_score(raw, str(work / "val"), report=False,
                                                                         log=quiet))})
            print(f"{name}: {int(steps)} pretraining steps, {time.monotonic() - t0:.0f} s", flush=True)
        print(f"\n{'features':26}{'normalize':>10}{'val image AUROC':>17}")
        for r in rows:
            print(f"{r['features']:26}{r['normalize']:>10}{r['image_auroc']:>17.3f}")
        best = max((r for r in rows if r["features"].startswith("MAE")), key=lambda r: r["image_auroc"])
        print(f"\nchosen: {best['features']}, normalize={best['normalize']} (validation image AUROC "
              f"{best['image_auroc']:.3f})")
        if a.json:
            a.json.write_text(json.dumps({"counts": counts, "rows": rows, "chosen": best}, indent=1) + "\n")
    finally:
        if a.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
