"""Visual anomaly detection (``selfsup anomaly fit|score``): PatchCore over a run's encoder or
raw pixel patches. Orchestration only: the detector lives in ``selfsup.evaluate.anomaly``. A table
or series run goes to ``api.outliers`` (per-row and per-window scores beside IsolationForest).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup import files, lock, runs
from selfsup.api.common import Log, say
from selfsup.data import open_source
from selfsup.data.mvtec import is_mvtec, load_mvtec, read_folder_square
from selfsup.encoders.sizing import check_size, resolve_geometry
from selfsup.evaluate.anomaly import standardize_images
from selfsup.evaluate.records import merge_records

ANOMALY_BANK = "patchcore.safetensors"
ANOMALY_NORMALIZE = ("none", "image")
# "image" (per-image standardisation) by default: chosen on a validation set built from normal
# images only (benchmarks/choose_anomaly_defaults.py), where it helped every feature extractor
DEFAULT_NORMALIZE = "image"


def _normal_images(data: str, image_size: int, channels: int | None, max_samples: int | None,
                   log: Log = say) -> torch.Tensor:
    """Normal images to fit on: ``train/good`` of an MVTec root, a folder, or any ``--data`` source."""
    if is_mvtec(data):
        return load_mvtec(data, "train", image_size, channels).images[:max_samples]
    if Path(data).is_dir():
        return read_folder_square(Path(data), image_size, channels, max_samples, log)[0]
    from selfsup.data.sources import SkipCounter

    src, skips = open_source(data, image_size=image_size, channels=channels), SkipCounter()
    x, _ = src.arrays(max_samples, skips=skips)
    if skips.total:
        log(f"{src.name}: {skips.summary()}")
    return torch.from_numpy(x)


def _native_side(data: str) -> int:
    """The short side of the first readable image of ``data`` (MVTec root, folder or source)."""
    from selfsup.data.decode import DecodeError, image_info
    from selfsup.data.sources.folder import images_under

    root = Path(data) / "train" / "good" if is_mvtec(data) else Path(data)
    if root.is_dir():
        for path in images_under(root)[:16]:
            try:
                _, w, h, _ = image_info(path.read_bytes())
                return min(w, h)
            except (OSError, DecodeError):
                continue
    return open_source(data).spec.image_size


@lock.writes
def anomaly_fit(
    run: str | Path | None,
    data: str,
    *,
    out: str | Path | None = None,
    image_size: int | None = None,
    coreset: float = 0.1,
    layers: Sequence[int] | None = None,
    pixel_patch: int = 8,
    reweight: int = 0,
    normalize: str = DEFAULT_NORMALIZE,
    max_samples: int | None = None,
    seed: int = 0,
    data_options: dict | None = None,
    device: str = "auto",
    log: Log = say,
) -> Path:
    """Fit a PatchCore memory bank on normal images; returns the bank's path.

    Features are the patch tokens of ``run``'s encoder (blocks ``layers``, default the two around
    mid-depth, 3x3-averaged), or raw ``pixel_patch`` x ``pixel_patch`` pixel patches when ``run``
    is None. ``data``: an MVTec-AD root (its ``train/good`` is used), an image folder (every image
    resized as a whole to a square) or any ``--data`` source. ``coreset`` is the fraction of all
    training patches kept. ``normalize`` "image" (the default) applies ``standardize_images`` to
    every image first (also when scoring): exposure differences between shots otherwise dominate
    patch distances; "none" feeds the images as they are. Writes the bank (default
    ``RUN/anomaly/patchcore.safetensors``, or ``runs/anomaly-raw-<time>/`` for raw pixels) and
    ``patchcore.json`` beside it, which names the run and image size so ``anomaly_score`` can
    rebuild the detector A table or series run keeps a bank of its training rows instead
    (``api.outliers.outlier_fit``; ``data_options`` such as ``{"split": "train"}``, the default).
    """
    from selfsup.api.outliers import is_structured, outlier_fit
    from selfsup.evaluate.anomaly import PatchCore

    if run is not None and is_structured(run):
        return outlier_fit(run, data, out=out, data_options=data_options, max_samples=max_samples, seed=seed,
                           device=device, log=log)

    if normalize not in ANOMALY_NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(ANOMALY_NORMALIZE)}, not {normalize!r}")
    encoder, channels = None, None
    if run is not None:
        encoder, spec, _ = runs.load_encoder(run, device=device)
        channels, image_size = spec.channels, image_size or spec.image_size
        if hasattr(encoder, "patch_size"):
            check_size(image_size, encoder.patch_size, "--image-size")
    elif image_size is None:  # raw pixels: the geometry rule of a run, with the pixel patch as its patch
        native = _native_side(data)
        geo = resolve_geometry(native, 1, patch_size=pixel_patch, gpu=False)
        image_size = geo.image_size
        log(geo.why.replace("data.image_size", "--image-size"))
    else:
        check_size(image_size, pixel_patch, "--image-size")
    if out is None and run is None:
        out = runs.timestamped("anomaly-raw") / ANOMALY_BANK
    elif out is None:
        out = runs.results_dir(run, log) / "anomaly" / ANOMALY_BANK
    out = Path(out)
    out = out / ANOMALY_BANK if out.suffix != ".safetensors" else out
    lock.hold(out.parent)  # one writer per folder
    images = _normal_images(data, image_size, channels, max_samples, log)
    what = f"{runs.source_name(run)} encoder" if run is not None else f"raw {pixel_patch}x{pixel_patch} pixel patches"
    log(f"fitting PatchCore on {len(images)} normal images of {data} at {image_size}px with {what}")
    t0 = time.monotonic()
    model = PatchCore(layers=tuple(layers) if layers else None, pixel_patch=pixel_patch, coreset_size=coreset,
                      reweight=reweight, seed=seed)
    model.fit(encoder, standardize_images(images) if normalize == "image" else images)
    model.save(out)
    info = {"run": runs.canonical(run) if run is not None else None,
            "encoder": None if run is None else "foundation" if runs.is_reference(run) else "ssl",
            "image_size": image_size,
            "channels": int(images.shape[1]), "normalize": normalize, "data": str(data), "n_train": len(images),
            "memory_bank": list(model.memory_bank.shape), "patchcore": model.config(),
            "fit_seconds": round(time.monotonic() - t0, 2)}
    files.write_json(out.with_suffix(".json"), info)
    log(f"memory bank {tuple(model.memory_bank.shape)} saved to {out} in {info['fit_seconds']:.1f}s")
    return out


def load_anomaly(model: str | Path, device: str | None = None) -> tuple[Any, dict]:
    """The PatchCore detector saved by ``anomaly_fit`` (bank file or its folder) and its JSON; its encoder
    on ``device`` (``hardware.resolve_device``; None = the CPU)."""
    from selfsup.evaluate.anomaly import PatchCore

    path = Path(model)
    path = path / ANOMALY_BANK if path.is_dir() else path
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no PatchCore bank at {path} (with {meta_path.name} beside it); run `anomaly fit`")
    info = json.loads(meta_path.read_text())
    encoder = runs.load_encoder(info["run"], device=device)[0] if info["run"] else None
    return PatchCore.load(path, encoder), info


@lock.writes
def anomaly_score(
    model: str | Path,
    data: str,
    *,
    out: str | Path | None = None,
    max_figures: int = 4,
    report: bool = True,
    data_options: dict | None = None,
    device: str = "auto",
    log: Log = say,
    out_dir: str | Path | None = None,
) -> list[dict]:
    """Score ``data`` with a bank saved by ``anomaly_fit``: image scores and pixel heatmaps.

    ``out`` is the output folder, as in every other API function (``out_dir``: its old name, kept for one
    release).

    An MVTec-AD root: its ``test/`` split against the masks in ``ground_truth/``; image and pixel
    AUROC per defect type and overall ("defect": "all") are merged into the run's ``metrics.json``
    (the bank's folder for raw pixels), heatmaps of up to ``max_figures`` images per defect go to
    ``OUT/heatmaps/<defect>.png`` and the anomaly section into ``report.html``. A plain image
    folder: scores only. Always writes ``OUT/scores.csv`` (path, defect, score); ``out``
    defaults to the bank's folder. Returns the records (none without masks). A bank of a table or
    series run is scored by ``api.outliers.outlier_score`` (``data_options`` such as ``{"split": "test"}``).
    """

    from selfsup.api.outliers import DETECTORS_FILE, outlier_score

    if out_dir is not None:
        warnings.warn("anomaly_score(out_dir=...) is deprecated; use out=...", DeprecationWarning, stacklevel=2)
        out = out if out is not None else out_dir
    out_dir = out
    if Path(model).name == DETECTORS_FILE or (Path(model) / DETECTORS_FILE).is_file():
        return outlier_score(model, data, data_options=data_options, out=out_dir, report=report, device=device,
                             log=log)

    from selfsup.data.mvtec import load_mvtec
    from selfsup.evaluate.anomaly import anomaly_records
    from selfsup.interpret.figures import plot_anomaly

    detector, info = load_anomaly(model, device=device)
    bank = Path(model) / ANOMALY_BANK if Path(model).is_dir() else Path(model)
    out_dir = Path(out_dir) if out_dir else bank.parent
    # records, figures and the report go to the run only when the bank lies inside it (RUN/anomaly/);
    # the run named in patchcore.json is read from, never written to, otherwise
    run_dir = runs.owning_run(bank.parent, info["run"] if info.get("encoder") != "foundation" else None)
    for folder in dict.fromkeys((out_dir, run_dir)):
        lock.hold(folder)
    size, channels = info["image_size"], info["channels"]
    mvtec = is_mvtec(data)
    if mvtec:
        test = load_mvtec(data, "test", size, channels)
        images, paths, defects = test.images, test.paths, list(test.defect)
    else:
        images, paths = read_folder_square(Path(data), size, channels, log=log)
        defects = [Path(p).parent.name if Path(p).parent != Path(data) else "" for p in paths]
    t0 = time.monotonic()
    scores, heatmaps = detector.score(standardize_images(images) if info.get("normalize") == "image" else images)
    log(f"scored {len(images)} images of {data} in {time.monotonic() - t0:.1f}s")
    files.write_csv(out_dir / "scores.csv", ["path", "defect", "score"],
                    ([p, d, f"{float(s):.6g}"] for p, d, s in zip(paths, defects, scores.tolist(), strict=True)))
    log(f"scores written to {out_dir / 'scores.csv'}")
    if not mvtec:
        return []

    task = Path(data).resolve().name
    recs = anomaly_records(task, test, scores, heatmaps, info.get("encoder") or ("ssl" if info["run"] else "raw"))
    for r in recs:
        r.update(image_size=size, coreset=info["patchcore"]["coreset_size"], memory_bank=info["memory_bank"][0],
                 n_train=info["n_train"], bank=str(bank))
    merge_records(run_dir / runs.METRICS, recs)
    by = {(r["defect"], r["metric"]): r["mean"] for r in recs}
    log("defect       image AUROC  pixel AUROC\n" + "\n".join(
        f"{d:12s} {by[d, 'image_auroc']:11.4f}  {by[d, 'pixel_auroc']:11.4f}" for d in dict.fromkeys(k[0] for k in by)))

    figures = out_dir / "heatmaps"
    figures.mkdir(exist_ok=True)
    masks, d = test.masks, np.asarray(defects)
    pick: list[int] = []
    for name in ["good", *test.defect_types]:
        idx = np.flatnonzero(d == name)
        idx = idx[np.linspace(0, len(idx) - 1, min(max_figures, len(idx))).round().astype(int)] if len(idx) else idx
        png = plot_anomaly(images[idx], heatmaps[idx], masks[idx], scores[idx], [name] * len(idx))
        files.write_bytes(figures / f"{name}.png", png)
        pick += [int(i) for i in (idx[[0, -1]] if name == "good" and len(idx) > 1 else idx[:1])]
    log(f"heatmaps written to {figures}")
    if report:
        _anomaly_report(run_dir, info, {"images": images[pick], "heatmaps": heatmaps[pick], "masks": masks[pick],
                                        "scores": scores[pick], "names": [defects[i] for i in pick]},
                        test.images, torch.tensor([(["good", *test.defect_types]).index(x) for x in defects]),
                        ["good", *test.defect_types], log)
    return recs


def _anomaly_report(run_dir: Path, info: dict, anomaly: dict, images: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str], log: Log, max_images: int = 200) -> None:
    """Rewrite ``report.html`` with the anomaly section (and, for a run, its other sections on test images)."""
    from selfsup.interpret.report import build_report

    method = None
    if info["run"] and (run_dir / runs.METHOD).is_file() and (run_dir / runs.CONFIG).is_file():
        try:
            method = runs.load_method(run_dir)
        except (ValueError, KeyError, RuntimeError, FileNotFoundError) as e:
            log(f"report without the run's method: {e}")
    keep = np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int)
    path = build_report(run_dir, method=method, images=images[keep] if method is not None else None,
                        labels=labels[keep] if method is not None else None, class_names=class_names,
                        anomaly=anomaly)
    log(f"report written to {path}")


