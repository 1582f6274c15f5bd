"""Dense tasks (``--task detect|segment``): few-label evaluation, adaptation, prediction. Orchestration only:
readers in ``data.dense``, heads and training in ``selfsup.dense``, protocols in ``evaluate.dense``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from selfsup import lock, runs
from selfsup.api.common import Log, say
from selfsup.data.dense import DenseSet, dense_kind, draw_labels, read_dense
from selfsup.dense.train import PROTOCOLS, DenseRecipe, fit_dense, make_model, predict, score
from selfsup.encoders import build_encoder
from selfsup.evaluate.dense import DEFAULT_FRACTION, METRICS, copier, evaluate_dense_protocols
from selfsup.evaluate.records import format_table, merge_records, record
from selfsup.evaluate.verdict import format_verdicts, verdicts
from selfsup.files import atomic_path, write_bytes, write_json
from selfsup.hardware import resolve_device
from selfsup.interpret.dense import per_class_table

DENSE_SIZE = 192  # default side of the square images dense heads read (NEU-DET is 200 px)
TASKS = ("detect", "segment")
MODEL_FILE, ENCODER_FILE, INFO_FILE = "dense.safetensors", "encoder.safetensors", "dense.json"


def dense_size(encoder: torch.nn.Module, image_size: int | None) -> int:
    """The image side for ``encoder``: ``image_size`` or 192, a multiple of a ViT's patch (and of 32 for a CNN)."""
    s = image_size or DENSE_SIZE
    p = int(getattr(encoder, "patch_size", 32))
    return max(p, round(s / p) * p)


def set_name(data: str | Path) -> str:
    """A set's name for records: a COCO file's folder (``neu_det``), else the folder's own name."""
    p = Path(data)
    return p.parent.name if p.is_file() else p.name


def _read_pair(task: str, data: str, train_data: str | None, channels: int, size: int,
               max_samples: int | None, log: Log) -> tuple[DenseSet, DenseSet]:
    """(labelled pool, test set). A segmentation folder with train.txt / test.txt splits itself; otherwise
    without ``train_data`` the set is split 50 / 50 (seeded) into pool and test."""
    kind = dense_kind(data)
    if (kind in ("masks", "mvtec")) != (task == "segment"):
        raise ValueError(f"{data}: a {kind} set does not fit --task {task} (detect: COCO / VOC / YOLO; "
                         "segment: images/ + masks/ or MVTec)")
    opts = dict(channels=channels, image_size=size, max_samples=max_samples)
    if train_data is not None:
        pool = read_dense(train_data, split="train", **opts)
        test = read_dense(data, split="test", class_names=pool.class_names if task == "detect" else None, **opts)
    elif kind == "masks" and (Path(data) / "train.txt").is_file() and (Path(data) / "test.txt").is_file():
        pool, test = read_dense(data, split="train", **opts), read_dense(data, split="test", **opts)
    else:
        full = read_dense(data, split="test", **opts)
        order = np.random.default_rng(0).permutation(len(full))
        pool, test = full.subset(np.sort(order[: len(full) // 2])), full.subset(np.sort(order[len(full) // 2:]))
        pool.skipped = full.skipped
        log(f"{data}: split 50 / 50 (seed 0) into {len(pool)} labelled-pool and {len(test)} test images")
    seen = {hashlib.sha1(x.numpy().tobytes()).hexdigest(): k for x, k in zip(pool.images, pool.keys, strict=True)}
    overlap = [k for x, k in zip(test.images, test.keys, strict=True)
               if hashlib.sha1(x.numpy().tobytes()).hexdigest() in seen]
    if overlap:
        raise ValueError(f"{len(overlap)} test images are also in the labelled pool (e.g. {overlap[0]}): "
                         "give a --train-data that shares no image with --data")
    for name, ds in (("pool", pool), ("test", test)):
        if ds.skipped or ds.bad_boxes:
            log(f"{name}: {ds.skipped} unreadable images or annotations skipped, {ds.bad_boxes} empty boxes dropped")
    return pool, test


def _check_dense(protocols: Sequence[str], device: str, log: Log) -> None:
    """Refuse a protocol dense tasks do not have (before any data is read) and say where they run."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"detect/segment protocols are {', '.join(PROTOCOLS)}; {', '.join(unknown)} is not "
                         "available for them")
    if resolve_device(device).type != "cpu":
        log(f"note: detection and segmentation train on the CPU in this release (--device {device} is not used)")


@lock.writes
def evaluate_dense(
    run: str | Path,
    data: str,
    *,
    task: str = "detect",
    train_data: str | None = None,
    protocols: Sequence[str] = ("linear", "finetune"),
    baselines: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: int = 3,
    image_size: int | None = None,
    head: str = "fpn",
    foundation: str | Path | None = None,
    recipe: DenseRecipe | None = None,
    max_samples: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    log: Log = say,
) -> list[dict]:
    """Few-label detection or segmentation with a run's (or public model's) encoder, beside the same
    detector / segmenter from scratch and ``foundation``, with the paired verdict.

    Records (``evaluate.dense``) and verdicts are merged into the run's ``metrics.json`` and returned.
    ``label_fractions`` default to 0.1 for boxes, 0.25 for masks."""
    if task not in TASKS:
        raise ValueError(f"--task must be classify, detect or segment, not {task!r}")
    _check_dense(protocols, device, log)
    primary = "foundation" if runs.is_reference(run) else "ssl"
    if primary == "foundation" and foundation is not None:
        raise ValueError(f"{run} is itself a public model; give a run folder to compare with --foundation")
    encoder, spec, enc_cfg = runs.load_encoder(run)
    size = dense_size(encoder, image_size)
    encoders = {primary: copier(encoder)}
    baselines = ["scratch"] if baselines is None else list(baselines)
    if "scratch" in baselines:
        encoders["scratch"] = lambda: build_encoder(enc_cfg, spec)
    if foundation is not None:
        found, _, _ = runs.load_encoder(foundation)
        encoders["foundation"] = copier(found)
    pool, test = _read_pair(task, data, train_data, spec.channels if spec.modality == "image" else 3, size,
                            max_samples, log)
    if shots is None and label_fractions is None:
        label_fractions = [DEFAULT_FRACTION[task]]
    name = f"{task}/{set_name(data)}"
    log(f"evaluating {runs.source_name(run)} on {name}: {len(pool)} labelled pool, {len(test)} test images, "
        f"{pool.num_classes} classes, {size} px, protocols {', '.join(protocols)}, encoders {', '.join(encoders)}")
    t0 = time.perf_counter()
    recs = evaluate_dense_protocols(task, name, encoders, pool, test, protocols=tuple(protocols),
                                    shots=list(shots) if shots else None,
                                    label_fractions=list(label_fractions) if label_fractions else None,
                                    seeds=seeds, recipe=recipe, head=head, progress=log)
    for r in recs:
        r.update(image_size=size, class_names=pool.class_names)
        if r["encoder"] == "foundation":
            r["model"] = runs.canonical(foundation if primary == "ssl" else run)
    judged = verdicts(recs, encoder=primary, metrics=METRICS[task])
    out_dir = Path(out) if out is not None else runs.results_dir(run, log)
    lock.hold(out_dir)
    merge_records(out_dir / runs.METRICS, recs + judged)
    log(format_table(recs))
    if judged:
        log("verdict (paired over the same label draws):\n" + format_verdicts(judged))
    log(f"dense evaluation took {time.perf_counter() - t0:.0f} s")
    return recs + judged


@lock.writes
def adapt_dense(
    run: str | Path,
    data: str,
    *,
    task: str = "detect",
    shots: int | None = None,
    label_fraction: float | None = None,
    protocol: str = "finetune",
    head: str = "fpn",
    image_size: int | None = None,
    seed: int = 0,
    test_data: str | None = None,
    recipe: DenseRecipe | None = None,
    max_samples: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    log: Log = say,
) -> Path:
    """Train a detector or segmenter on few labelled images of ``data`` (all without a budget); save it.

    The folder holds ``encoder.safetensors`` (the trained encoder, loadable as any encoder),
    ``dense.safetensors`` (the whole model) and ``dense.json`` (task, classes, image size, head,
    what was chosen, scores). ``test_data`` gives a test score."""
    if task not in TASKS:
        raise ValueError(f"--task must be detect or segment here, not {task!r}")
    if shots is not None and label_fraction is not None:
        raise ValueError("give --shots or --label-fraction, not both")
    _check_dense([protocol], device, log)
    encoder, spec, enc_cfg = runs.load_encoder(run)
    size = dense_size(encoder, image_size)
    channels = spec.channels if spec.modality == "image" else 3
    pool = read_dense(data, split="train", channels=channels, image_size=size, max_samples=max_samples)
    if (pool.task == "segment") != (task == "segment"):
        raise ValueError(f"{data} is a {pool.task} set, not one for --task {task}")
    idx = np.arange(len(pool)) if shots is None and label_fraction is None else \
        draw_labels(pool, shots=shots, fraction=label_fraction, seed=seed)
    labelled = pool.subset(idx)
    budget = f"{shots}shot" if shots else f"{label_fraction:g}" if label_fraction else "all"
    out = Path(out) if out is not None else runs.results_dir(run, log) / "dense" / f"{task}-{budget}-seed{seed}"
    log(f"adapting {runs.source_name(run)} to {task} on {len(labelled)} of {len(pool)} images of {data} ({size} px)")
    t0 = time.perf_counter()
    model, info = fit_dense(lambda: make_model(task, copier(encoder)(), pool.num_classes, head), labelled,
                            recipe or DenseRecipe(), protocol, seed, log=log)
    seconds = time.perf_counter() - t0
    lock.hold(out)  # one writer per model folder, taken once there is something to write
    meta = {"task": task, "class_names": pool.class_names, "image_size": size, "channels": channels, "head": head,
            "protocol": protocol, "source": runs.canonical(run), "n_labels": len(labelled), "seed": seed,
            "chosen": info, "seconds": round(seconds, 1)}
    if test_data is not None:
        test = read_dense(test_data, split="test", channels=channels, image_size=size, max_samples=max_samples,
                          class_names=pool.class_names if task == "detect" else None)
        s = score(model, test)
        meta["test"] = {k: v for k, v in s.items() if k != "main"}
        _figures(model, test, out, log)
        log(per_class_table(s["per_class"]))
        metrics = METRICS[task]
        recs = [record(f"{task}/{set_name(test_data)}", protocol, "ssl" if not runs.is_reference(run) else
                       "foundation", m, [s[m]], **({"shots": shots} if shots else {"label_fraction": label_fraction
                       or 1.0}), dense_task=task) for m in metrics]
        merge_records(out / runs.METRICS, recs)
        log("test: " + ", ".join(f"{m} {s[m]:.4f}" for m in metrics))
    out.mkdir(parents=True, exist_ok=True)
    runs.write_encoder(model.pyramid.encoder.state_dict(), enc_cfg, spec, out / ENCODER_FILE)
    with atomic_path(out / MODEL_FILE) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    write_json(out / INFO_FILE, meta)
    log(f"saved the {task} model to {out} ({seconds:.0f} s)")
    return out


def _figures(model: torch.nn.Module, test: DenseSet, out: Path, log: Log, n: int = 4) -> Path:
    """``out/figures/dense_examples.png``: predictions beside the ground truth on the first ``n`` test images."""
    from selfsup.interpret.dense import plot_detections, plot_masks

    sub = test.subset(range(min(n, len(test))))
    p = predict(model, sub.images)
    png = plot_detections(sub, p) if test.task == "detect" else plot_masks(sub, p)
    path = out / "figures" / "dense_examples.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, png)
    log(f"predictions beside the ground truth: {path}")
    return path


def load_dense(model_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """A model folder written by ``adapt_dense`` -> (model in eval mode, its dense.json)."""
    d = Path(model_dir)
    if not (d / INFO_FILE).is_file():
        raise FileNotFoundError(f"not a dense model folder (no {INFO_FILE}): {d}")
    meta = json.loads((d / INFO_FILE).read_text())
    encoder, _, _ = runs.load_encoder(d / ENCODER_FILE)
    model = make_model(meta["task"], encoder, len(meta["class_names"]), meta.get("head", "fpn"))
    model.load_state_dict(load_file(str(d / MODEL_FILE)))
    return model.eval(), meta


def predict_dense(model_dir: str | Path, data: str, out: str | Path | None = None, *, min_score: float = 0.05,
                  max_samples: int | None = None, log: Log = say) -> dict:
    """Predict on every readable image of ``data`` (a folder of images, or any dense set).

    Detection: ``out`` a COCO results JSON list ({"image_id", "file_name", "category_id", "bbox" [x, y, w, h]
    in the image's pixels, "score"}; ids as in a COCO file given as data, else the image's index + 1).
    Segmentation: ``out`` a folder of PNG masks (class ids, the image's own size) named by image stem.
    ``out`` defaults to ``preds.json`` / ``pred_masks/``."""
    from PIL import Image

    from selfsup.data.dense import read_image
    from selfsup.data.sources.folder import images_under
    from selfsup.dense.metrics import coco_results

    model, meta = load_dense(model_dir)
    size, channels = meta["image_size"], meta["channels"]
    coco_ids = None
    p = Path(data)
    if p.is_file() and p.suffix == ".json":
        ds = read_dense(p, channels=channels, image_size=size, max_samples=max_samples,
                        class_names=meta["class_names"] if meta["task"] == "detect" else None)
        files = {im["file_name"]: im["id"] for im in json.loads(p.read_text())["images"]}
        coco_ids = [files.get(k) for k in ds.keys]
    else:
        paths = images_under(p)[:max_samples] if max_samples else images_under(p)
        imgs, sizes, keys, skipped = [], [], [], 0
        for f in paths:
            got = read_image(Path(f), channels, size)
            if got is None:
                skipped += 1
                continue
            imgs.append(got[0])
            sizes.append(got[1])
            keys.append(str(Path(f).relative_to(p)) if p.is_dir() else Path(f).name)
        if not imgs:
            raise ValueError(f"{data}: no readable images ({skipped} skipped)")
        ds = DenseSet(meta["task"], torch.stack(imgs), sizes, keys, meta["class_names"], skipped=skipped)
    preds = predict(model, ds.images)
    out = Path(out) if out is not None else Path("preds.json" if meta["task"] == "detect" else "pred_masks")
    if meta["task"] == "detect":
        preds = [{k: v[d["scores"] >= min_score] for k, v in d.items()} for d in preds]
        res = coco_results(ds, preds)
        for r in res:
            i = r["image_id"] - 1
            r["file_name"] = ds.keys[i]
            if coco_ids is not None and coco_ids[i] is not None:
                r["image_id"] = coco_ids[i]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, res, indent=None)
        summary = {"images": len(ds), "skipped": ds.skipped, "detections": len(res), "out": str(out)}
    else:
        out.mkdir(parents=True, exist_ok=True)
        for key, m, (h, w) in zip(ds.keys, preds, ds.sizes, strict=True):
            img = Image.fromarray(m.to(torch.uint8).numpy()).resize((w, h), Image.NEAREST)
            with atomic_path(out / f"{Path(key).stem}.png") as tmp:
                img.save(tmp, format="PNG")
        summary = {"images": len(ds), "skipped": ds.skipped, "masks": str(out), "classes": meta["class_names"]}
    log(f"predicted {summary['images']} images ({ds.skipped} skipped) -> {out}")
    return summary


def export_dense(model_dir: str | Path, format: str = "onnx", out: str | Path | None = None, *,
                 log: Log = say) -> Path:
    """A dense model folder as ONNX (the whole model with its tensor-only post-processing,
    ``dense.export``), checked against torch in onnxruntime; ``safetensors`` gives its encoder alone."""
    import shutil

    from selfsup.dense.export import check_dense_onnx, export_dense_onnx

    d = Path(model_dir)
    if format == "safetensors":
        target = Path(out) if out else d / "export" / ENCODER_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / ENCODER_FILE, target)
        return target
    if format != "onnx":
        raise ValueError(f"a {d} detector or segmenter exports as onnx (whole model) or safetensors (encoder)")
    model, meta = load_dense(d)
    target = Path(out) if out else d / "export" / "model.onnx"
    export_dense_onnx(model, meta["channels"], meta["image_size"], target)
    torch.manual_seed(0)
    diff = check_dense_onnx(model, target, torch.rand(3, meta["channels"], meta["image_size"], meta["image_size"]))
    if not diff < 1e-3:
        raise RuntimeError(f"the ONNX export of {d} differs from torch by {diff:.2e}")
    log(f"exported the whole {meta['task']} model to {target}; onnxruntime matches torch: max abs difference "
        f"{diff:.2e} (post-processing left to the user: selfsup.dense.export's docstring)")
    return target


__all__ = ["DENSE_SIZE", "TASKS", "adapt_dense", "dense_size", "evaluate_dense", "export_dense", "load_dense",
           "predict_dense"]
