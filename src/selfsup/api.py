"""The public Python API; each function mirrors a ``selfsup`` command.

    run = selfsup.pretrain("images/", method="mae", budget="10m")
    records = selfsup.evaluate(run, "labelled/", protocols=["linear"], shots=[5])
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from selfsup.config import ConfigError, RunConfig, build_config, dump_config, load_config
from selfsup.data import open_source
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.fewshot import evaluate_few_label, split_pool_test
from selfsup.evaluate.finetune import FinetuneRecipe
from selfsup.evaluate.records import format_table, merge_records, record
from selfsup.methods import build_method
from selfsup.train import distributed

Log = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, flush=True)


def new_run_dir(method: str, out: str | Path | None) -> Path:
    """A fresh run folder; an existing run is never overwritten."""
    run = Path(out) if out else Path("runs") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run / "config.yaml").exists() and distributed.is_global_zero():  # other ranks follow rank 0's folder
        raise ConfigError(f"{run} already holds a run; continue it with --resume {run} or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run


def _spec_of(source: Any) -> InputSpec:
    return source.spec


def save_encoder(method: nn.Module, cfg: RunConfig, spec: InputSpec, run_dir: Path) -> Path:
    """``encoder.safetensors`` (timm-named weights + config in the metadata) and ``method.safetensors``."""
    meta = {
        "encoder_config": cfg.encoder.model_dump_json(),
        "input_spec": json.dumps(asdict(spec)),
        "method": cfg.method_name,
        "format": "selfsup/timm",
    }
    enc = {k: v.detach().contiguous().cpu() for k, v in method.encoder.state_dict().items()}
    save_file(enc, str(run_dir / "encoder.safetensors"), metadata=meta)
    full = {k: v.detach().contiguous().cpu().clone() for k, v in method.state_dict().items()}
    save_file(full, str(run_dir / "method.safetensors"), metadata=meta)
    return run_dir / "encoder.safetensors"


def _read_meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_run_config(run: str | Path) -> RunConfig:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"not a run folder (no config.yaml): {run}")
    return load_config(path)


def load_encoder(run_or_file: str | Path) -> tuple[nn.Module, InputSpec, EncoderConfig]:
    """The pretrained encoder of a run folder (or an ``encoder.safetensors`` file), in eval mode."""
    path = Path(run_or_file)
    path = path / "encoder.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no encoder weights at {path}; did the pretraining finish?")
    meta = _read_meta(path)
    enc_cfg = EncoderConfig.model_validate_json(meta["encoder_config"])
    spec = InputSpec(**json.loads(meta["input_spec"]))
    encoder = build_encoder(enc_cfg, spec)
    encoder.load_state_dict(load_file(str(path)))
    return encoder.eval(), spec, enc_cfg


def load_method(run: str | Path) -> nn.Module:
    """The whole trained method of a run (encoder plus heads, decoders, text towers), in eval mode."""
    run = Path(run)
    path = run / "method.safetensors"
    meta = _read_meta(path)
    cfg = load_run_config(run)
    spec = InputSpec(**json.loads(meta["input_spec"]))
    method = build_method(cfg.method_name, cfg.method_options, cfg.encoder, spec)
    method.load_state_dict(load_file(str(path)))
    return method.eval()


def _open(cfg: RunConfig, path: str | None = None, spec: InputSpec | None = None):
    d = cfg.data
    return open_source(
        path or d.path,
        image_size=spec.image_size if spec else d.image_size,
        channels=spec.channels if spec else d.channels,
        images_key=d.images_key, labels_key=d.labels_key,
    )


def pretrain(
    data: str | None = None,
    method: str | None = None,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    budget: str | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    resume: str | Path | None = None,
    progress: bool | None = None,
    log: Log = _say,
) -> Path:
    """Pretrain an encoder; returns the run folder. With ``resume``, continue that run."""
    from selfsup.train.checkpoint import newest_good_checkpoint  # Lightning loads only when training
    from selfsup.train.engine import fit

    length = {k: v for k, v in {"budget": budget, "steps": steps, "epochs": epochs}.items() if v is not None}
    if resume is not None:
        run_dir = Path(resume)
        cfg = load_run_config(run_dir)
        raw = cfg.model_dump(mode="json")
        if length:
            raw["train"].update({"budget": None, "steps": None, "epochs": None, **length})
        cfg = build_config(raw, list(overrides))
        ckpt = newest_good_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            log(f"no usable checkpoint in {run_dir / 'checkpoints'}; starting this run from the beginning")
        else:
            log(f"resuming from {ckpt}")
    else:
        train = {"budget": None, "steps": None, "epochs": None, **length} if length else None
        cfg = load_config(config, list(overrides), method=method, data={"path": data} if data else None,
                          train=train)
        t = cfg.train
        if not (out or cfg.out) and distributed.multi_process(t.strategy, t.devices, t.num_nodes):
            raise ConfigError("a multi-process run needs --out (or out: in the config) so every process "
                              "writes the same run folder")
        run_dir = new_run_dir(cfg.method_name, out or cfg.out)
        ckpt = None
    source = _open(cfg)
    spec = _spec_of(source)
    cfg.data.image_size, cfg.data.channels = spec.image_size, spec.channels
    if distributed.is_global_zero():
        dump_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method_name, cfg.method_options, cfg.encoder, spec)
    if hasattr(model, "prepare"):
        model.prepare(source, run_dir)
    n_params = sum(p.numel() for p in model.encoder.parameters())
    log(f"pretraining {cfg.method_name} ({n_params / 1e6:.2f}M encoder parameters) on {source.name} "
        f"({spec.channels}x{spec.image_size}x{spec.image_size}); run folder {run_dir}")
    t = cfg.train
    bounded = t.steps is not None or t.budget is not None
    loader = source.loader(t.batch_size, shuffle=True, seed=t.seed, num_workers=cfg.data.num_workers,
                           drop_last=True, infinite=bounded)
    total = t.steps
    if t.epochs is not None and source.num_samples:
        total = t.epochs * max(1, source.num_samples // t.batch_size)
    module = fit(model, loader, t, run_dir, total_steps=total, resume_from=ckpt, progress=progress)
    if module.global_rank != 0:  # one process writes the results (counts are summed over ranks)
        return run_dir
    save_encoder(model, cfg, spec, run_dir)
    hist = module.loss_history
    tail = [v for _, v in hist[-max(1, len(hist) // 10):]] or [float("nan")]
    recs = [
        record(source.name, "pretrain", "ssl", "final_loss", [float(np.mean(tail))], method=cfg.method_name),
        record(source.name, "pretrain", "ssl", "steps", [float(module.global_step)], method=cfg.method_name),
        record(source.name, "pretrain", "ssl", "images_per_s",
               [module.images_seen / max(module.elapsed, 1e-9)], method=cfg.method_name),
        record(source.name, "pretrain", "ssl", "skipped_samples", [float(module.n_skipped)], method=cfg.method_name),
        record(source.name, "pretrain", "ssl", "nonfinite_steps", [float(module.bad_steps)], method=cfg.method_name),
    ]
    merge_records(run_dir / "metrics.json", recs)
    (run_dir / "loss_history.json").write_text(json.dumps(hist))
    skipped = f"; skipped {module.n_skipped} unreadable samples" if module.n_skipped else ""
    if module.skipped_examples:
        skipped += f" (e.g. {', '.join(module.skipped_examples[:3])})"
    log(f"done: {module.global_step} steps in {module.elapsed:.0f}s, final loss {np.mean(tail):.4f}{skipped}")
    return run_dir


def evaluate(
    run: str | Path,
    data: str,
    *,
    protocols: Sequence[str] = ("knn", "linear", "finetune"),
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: int = 3,
    train_data: str | None = None,
    test_fraction: float = 0.5,
    max_samples: int | None = None,
    recipe: FinetuneRecipe | None = None,
    log: Log = _say,
) -> list[dict]:
    """Few-label evaluation of a run's encoder beside the raw-pixel and from-scratch baselines.

    Labels for training come from ``train_data`` when given; otherwise ``data`` is split (stratified,
    fixed seed) into a labelled pool and a held-out test part. Records are merged into the run's
    ``metrics.json`` and returned.
    """
    run = Path(run)
    encoder, spec, enc_cfg = load_encoder(run)
    if shots is None and label_fractions is None:
        shots = [1, 5, 10]
    test_src = open_source(data, image_size=spec.image_size, channels=spec.channels)
    x_test, y_test = test_src.arrays(max_samples)
    if train_data is not None:
        x_pool, y_pool = open_source(train_data, image_size=spec.image_size, channels=spec.channels).arrays(max_samples)
    else:
        pool, test = split_pool_test(y_test, test_fraction=test_fraction, seed=0)
        x_pool, y_pool, x_test, y_test = x_test[pool], y_test[pool], x_test[test], y_test[test]
    if (y_test < 0).any() or (y_pool < 0).any():
        raise ValueError(f"{data}: few-label evaluation needs labels (class subfolders, .cls members or labels key)")
    num_classes = int(max(y_pool.max(), y_test.max()) + 1)
    log(f"evaluating {run.name} on {test_src.name}: {len(y_pool)} labelled pool, {len(y_test)} test, "
        f"{num_classes} classes, protocols {', '.join(protocols)}")

    def scratch() -> nn.Module:
        return build_encoder(enc_cfg, spec)

    recs = evaluate_few_label(
        encoder=encoder, make_scratch_encoder=scratch, train_images=x_pool, train_labels=y_pool,
        test_images=x_test, test_labels=y_test, num_classes=num_classes, protocols=tuple(protocols),
        shots=list(shots) if shots else None, label_fractions=list(label_fractions) if label_fractions else None,
        seeds=tuple(range(seeds)), task=test_src.name, recipe=recipe, feature_cache_dir=run / "cache",
        progress=log,
    )
    merge_records(run / "metrics.json", recs)
    log(format_table(recs))
    return recs


# The demo recipe: a small ViT on 8x8 digits upsampled to 16x16 (16 patches of 4x4), tuned so the
# whole story runs in minutes on a laptop CPU. Every number it prints is measured on held-out data.
DEMO_OVERRIDES = [
    "data.image_size=16", "data.num_workers=0",
    "encoder.size=custom", "encoder.width=128", "encoder.depth=4", "encoder.heads=4", "encoder.patch_size=4",
    "encoder.pool=avg",
    "method.mask_ratio=0.5", "method.decoder_width=64", "method.decoder_depth=2", "method.decoder_heads=4",
    "method.augment=crop", "method.norm_pix_loss=true",
    "train.batch_size=128", "train.lr=1e-3", "train.warmup=0.05", "train.log_every=5",
]


DEMO_FINETUNE = FinetuneRecipe(steps=100, batch_size=32)


def demo(out: str | Path | None = None, budget: str = "3m", *, log: Log = _say,
         shots: Sequence[int] = (1, 5, 10), seeds: int = 3, overrides: Sequence[str] = ()) -> list[dict]:
    """MAE on the built-in digits (train half, no labels), few-label evaluation on the test half,
    the table printed and ``report.html`` written. Returns the evaluation records."""
    out = Path(out) if out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.monotonic()
    run = pretrain("digits:train", "mae", overrides=[*DEMO_OVERRIDES, *overrides], out=out, budget=budget, log=log)
    records = evaluate(run, "digits:test", train_data="digits:train", shots=list(shots), seeds=seeds, log=log,
                       recipe=DEMO_FINETUNE)
    report_path = report(run, data="digits:test", log=log)
    log(f"demo finished in {time.monotonic() - t0:.0f}s; open {report_path}")
    return records


def report(run: str | Path, data: str | None = None, *, max_images: int = 500, log: Log = _say) -> Path:
    """Write ``RUN/report.html``: results, curves, reconstructions, attention and embedding maps."""
    from selfsup.interpret.report import build_report

    run = Path(run)
    method = load_method(run)
    images = labels = class_names = None
    if data is None:
        data = load_run_config(run).data.path
    try:
        src = open_source(data, image_size=method.spec.image_size if hasattr(method, "spec") else None)
        images, labels = src.arrays(max_images)
        class_names = src.spec.class_names
        if labels is not None and (labels < 0).all():
            labels = None
    except (ValueError, FileNotFoundError) as e:
        log(f"report without sample images: {e}")
    path = build_report(run, method=method, images=images, labels=labels, class_names=class_names)
    log(f"report written to {path}")
    return path


def embed(run: str | Path, data: str, out: str | Path, *, max_samples: int | None = None,
          batch_size: int = 256, log: Log = _say) -> Path:
    """Pooled encoder features of every sample in ``data``, saved with keys and labels.

    ``.npz`` gets arrays ``features`` (N, F), ``labels`` (N,), ``keys`` (N,); ``.safetensors`` the
    same tensors (keys in the metadata).
    """
    from selfsup.evaluate.features import extract_features

    encoder, spec, _ = load_encoder(run)
    src = open_source(data, image_size=spec.image_size, channels=spec.channels)
    feats, labels, keys = [], [], []
    seen = 0
    for batch in src.loader(batch_size, shuffle=False):
        if max_samples is not None and seen >= max_samples:
            break
        feats.append(extract_features(encoder, batch["image"], batch_size=batch_size))
        labels.append(batch["label"])
        keys += list(batch["key"])
        seen += len(batch["key"])
    if not feats:
        raise ValueError(f"{data}: no readable samples to embed")
    f, y = torch.cat(feats)[:max_samples], torch.cat(labels)[:max_samples]
    keys = keys[: len(f)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        save_file({"features": f.contiguous(), "labels": y.contiguous()}, str(out), metadata={"keys": json.dumps(keys)})
    else:
        np.savez(out, features=f.numpy(), labels=y.numpy(), keys=np.array(keys))
    log(f"wrote {len(f)} embeddings of width {f.shape[1]} to {out}")
    return out


def _collect(src: Any, max_samples: int | None) -> dict[str, list]:
    """Readable samples of a source as lists: inputs (images or waveforms), labels, captions."""
    inputs, labels, captions = [], [], []
    for s in src.dataset(shuffle=False):
        if s is None or "__skip__" in s:
            continue
        inputs.append(s["audio"] if "audio" in s else s["image"])
        labels.append(int(s.get("label", -1)))
        captions.append(list(s.get("captions") or ([s["text"]] if s.get("text") else [])))
        if max_samples is not None and len(inputs) >= max_samples:
            break
    if not inputs:
        raise ValueError(f"{src.name}: no readable samples")
    if not isinstance(inputs[0], torch.Tensor) or inputs[0].ndim == 3:
        inputs = torch.stack([torch.as_tensor(x) for x in inputs]) if inputs[0].ndim == 3 else inputs
    return {"inputs": inputs, "labels": labels, "captions": captions}


def _source_for(method: nn.Module, data: str) -> Any:
    spec = getattr(method, "spec", None)
    audio = spec is not None and spec.modality.startswith("audio")
    return open_source(data, image_size=None if audio else spec.image_size if spec else None,
                       channels=None if audio else spec.channels if spec else None)


def zero_shot(run: str | Path, data: str, classes: Sequence[str] | None = None, *,
              templates: Sequence[str] | None = None, max_samples: int | None = None, log: Log = _say) -> list[dict]:
    """Zero-shot classification with a CLIP/SigLIP run: class names -> prompts -> nearest text."""
    from selfsup.evaluate.zeroshot import zero_shot as _zero_shot

    run = Path(run)
    method = load_method(run)
    if not hasattr(method, "encode_text"):
        raise ValueError(f"{run}: zero-shot needs an image-text or audio-text method (clip, siglip)")
    src = _source_for(method, data)
    names = list(classes) if classes else src.spec.class_names
    if not names:
        raise ValueError(f"{data}: give the class names with --classes (in label order)")
    got = _collect(src, max_samples)
    recs = _zero_shot(method, got["inputs"], got["labels"], names, templates, task=src.name)
    merge_records(run / "metrics.json", recs)
    log(format_table(recs))
    return recs


def retrieve(run: str | Path, data: str, *, max_samples: int | None = None, log: Log = _say) -> list[dict]:
    """Image<->text (or audio<->text) recall@1/5/10 on a caption set, several captions per item allowed."""
    from selfsup.evaluate.retrieval import retrieval

    run = Path(run)
    method = load_method(run)
    if not hasattr(method, "encode_text"):
        raise ValueError(f"{run}: retrieval needs an image-text or audio-text method (clip, siglip)")
    src = _source_for(method, data)
    got = _collect(src, max_samples)
    keep = [i for i, c in enumerate(got["captions"]) if c]
    if not keep:
        raise ValueError(f"{data}: no captions found (.json with 'captions' or 'text')")
    inputs = got["inputs"][keep] if isinstance(got["inputs"], torch.Tensor) else [got["inputs"][i] for i in keep]
    recs = retrieval(method, inputs, [got["captions"][i] for i in keep], task=src.name)
    merge_records(run / "metrics.json", recs)
    log(format_table(recs))
    return recs


# ---- adaptation: a classifier from few labels, and predictions with it ---------------------------


def adapt(
    run: str | Path,
    data: str,
    *,
    shots: int | None = None,
    label_fraction: float | None = None,
    method: str = "finetune",
    out: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    recipe: FinetuneRecipe | None = None,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    merge: bool = True,
    max_samples: int | None = None,
    log: Log = _say,
) -> Path:
    """Train a classifier from a run's encoder on few labels of ``data``; returns the model folder.

    ``shots`` labels per class or a stratified ``label_fraction`` (all labels when neither) are
    drawn from ``data`` with ``seed``; ``val_fraction`` of them (at least one per class that has
    two) is held out for early stopping. ``method`` "finetune" (layer-wise lr decay 0.75) or
    "lora" (rank ``lora_rank`` adapters on the attention projections, merged into the weights
    when saving unless ``merge`` is False). Writes ``classifier.safetensors``, ``classifier.json``
    and ``metrics.json`` (held-out accuracy) to ``out`` (default ``RUN/classifiers/<method>-<budget>-seed<seed>``).
    """
    from selfsup.adapt import adapt_classifier, save_classifier
    from selfsup.data.sources import SkipCounter
    from selfsup.evaluate.fewshot import sample_few
    from selfsup.evaluate.records import budget as budget_name

    if shots is not None and label_fraction is not None:
        raise ValueError("give --shots or --label-fraction, not both")
    run = Path(run)
    encoder, spec, enc_cfg = load_encoder(run)
    src = open_source(data, image_size=spec.image_size, channels=spec.channels)
    skips = SkipCounter()
    x, y = src.arrays(max_samples, skips=skips)
    if not (y >= 0).any():
        raise ValueError(f"{data}: adaptation needs labels (class subfolders, .cls members or labels key)")
    names = list(src.spec.class_names or [])
    names += [str(i) for i in range(len(names), int(y.max()) + 1)]
    budget = {"shots": shots} if shots is not None else {"label_fraction": label_fraction or 1.0}
    idx = sample_few(y, seed=seed, **{"fraction" if k == "label_fraction" else k: v for k, v in budget.items()})
    tag = f"{shots}shot" if shots is not None else f"{100 * budget['label_fraction']:g}pct"
    out = Path(out) if out else run / "classifiers" / f"{method}-{tag}-seed{seed}"
    log(f"adapting {run.name} with {method} on {len(idx)} labels of {src.name} ({budget_name(budget)}, "
        f"{len(names)} classes, seed {seed}); {skips.summary()}")
    t0 = time.monotonic()
    model, info = adapt_classifier(encoder, x[idx], y[idx], len(names), method=method, recipe=recipe, seed=seed,
                                   val_fraction=val_fraction, lora_rank=lora_rank, lora_alpha=lora_alpha)
    info.update(run=str(run), data=data, task=src.name, n_labels=len(idx), train_seconds=time.monotonic() - t0,
                **budget)
    save_classifier(model, out, spec=spec, encoder_config=enc_cfg, class_names=names, merge=merge, info=info)
    recs = [record(src.name, method, "ssl", m, [info[m]], **budget, n_labels=len(idx), n_train=info["n_train"],
                   n_val=info["n_val"], seed=seed, split="held-out labels")
            for m in ("val_top1", "val_loss") if info[m] is not None]
    merge_records(out / "metrics.json", recs)
    val = (f"held-out accuracy {info['val_top1']:.4f} on {info['n_val']} labels (best at step {info['best_step']})"
           if info["val_top1"] is not None else "no held-out labels (one per class): no early stopping")
    log(f"trained {info['trainable_params']:,} parameters for {info['steps']} steps in {info['train_seconds']:.1f}s; "
        f"{val}; classifier saved to {out}")
    return out


def predict(
    model_dir: str | Path,
    data: str,
    out: str | Path = "preds.csv",
    *,
    max_samples: int | None = None,
    batch_size: int = 256,
    log: Log = _say,
) -> dict:
    """Predict every readable sample of ``data`` with a classifier saved by ``adapt``; write a CSV.

    Columns: ``key``, ``pred`` (class index), ``pred_name``, ``prob_<class>`` per class. Works on
    unlabelled data; when ``data`` has labels (with the same class names) the accuracy is reported.
    Returns {"out", "n", "skipped", "accuracy"}.
    """
    from selfsup.adapt import load_classifier, write_predictions
    from selfsup.adapt import predict as run_classifier

    model, config = load_classifier(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    s = config["input_spec"]
    src = open_source(data, image_size=s["image_size"], channels=s["channels"])
    preds = run_classifier(model, src.loader(batch_size, shuffle=False), max_samples)
    names = config["class_names"]
    write_predictions(out, preds, names)
    same = src.spec.class_names is None or list(src.spec.class_names) == names
    acc = preds.accuracy() if same else None
    summary = {"out": str(out), "n": len(preds.keys), "skipped": preds.skipped.total, "accuracy": acc}
    log(f"wrote {len(preds.keys)} predictions of {src.name} to {out}; {preds.skipped.summary()}"
        + (f"; accuracy {acc:.4f} on the labelled ones" if acc is not None else ""))
    return summary


CURVE_PROTOCOLS = ("knn", "linear", "finetune", "lora")
CURVE_SHOTS, CURVE_FRACTIONS = (1, 5, 10, 50), (1.0,)


def evaluate_curve(
    run: str | Path,
    data: str,
    *,
    protocols: Sequence[str] = CURVE_PROTOCOLS,
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: int = 3,
    train_data: str | None = None,
    test_fraction: float = 0.5,
    max_samples: int | None = None,
    recipe: FinetuneRecipe | None = None,
    log: Log = _say,
) -> list[dict]:
    """The label-efficiency curve: ``evaluate`` at several budgets, plotted to ``RUN/figures``.

    Default budgets: 1, 5, 10, 50 labels per class and 100% of the pool; every protocol beside the
    raw-pixel and from-scratch baselines, ``seeds`` draws each. Accuracy (and AUROC for two
    classes) vs labels with error bars (std over seeds) goes to ``RUN/figures/label_efficiency.png``.
    """
    from selfsup.interpret.figures import plot_label_efficiency

    if shots is None and label_fractions is None:
        shots, label_fractions = CURVE_SHOTS, CURVE_FRACTIONS
    if seeds < 3:
        log(f"warning: {seeds} seed(s); error bars need at least 3")
    recs = evaluate(run, data, protocols=protocols, shots=shots, label_fractions=label_fractions, seeds=seeds,
                    train_data=train_data, test_fraction=test_fraction, max_samples=max_samples, recipe=recipe,
                    log=log)
    png = plot_label_efficiency(recs)
    if png is None:
        log("no curve drawn: it needs at least two budgets of one kind (shots or fractions)")
        return recs
    path = Path(run) / "figures" / "label_efficiency.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    log(f"label-efficiency curve written to {path}")
    return recs


# ---- visual anomaly detection: PatchCore over a run's encoder (or raw pixel patches) -------------

ANOMALY_BANK = "patchcore.safetensors"
ANOMALY_NORMALIZE = ("none", "image")


def standardize_images(images: torch.Tensor | np.ndarray, mean: float = 128.0, std: float = 32.0) -> torch.Tensor:
    """Per-image brightness and contrast normalisation: each uint8 image (N, C, H, W) shifted and
    scaled to pixel mean ``mean`` and standard deviation ``std`` (over all its pixels), clipped to
    0..255. Removes exposure differences between shots, which otherwise dominate patch distances."""
    x = torch.as_tensor(images).float()
    m, s = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
    return (mean + std * (x - m) / (s + 1e-3)).clamp(0, 255).round().to(torch.uint8)


def _is_mvtec(data: str | Path) -> bool:
    """An MVTec-AD layout root: ``train/good`` or ``test/`` below it."""
    p = Path(data)
    return (p / "train" / "good").is_dir() or (p / "test").is_dir()


def _read_square(
    folder: Path, image_size: int, channels: int | None, max_samples: int | None = None, log: Log = _say
) -> tuple[torch.Tensor, list[str]]:
    """Every image below ``folder`` (recursive, sorted), resized as a whole to a square as
    ``load_mvtec`` does (no crop), so a plain folder and an MVTec split see the same pixels."""
    from PIL import Image

    from selfsup.data.mvtec import GREY_MODES
    from selfsup.data.sources import _images_under

    files = _images_under(folder)[:max_samples]
    mode = None if channels is None else {1: "L", 3: "RGB"}[channels]
    images, paths, skipped = [], [], 0
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                mode = mode or ("L" if im.mode in GREY_MODES else "RGB")
                arr = np.asarray(im.convert(mode).resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            skipped += 1
            continue
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        paths.append(str(path))
    if not images:
        raise FileNotFoundError(f"no readable images under {folder}")
    if skipped:
        log(f"skipped {skipped} unreadable image(s) under {folder}")
    return torch.from_numpy(np.stack(images)), paths


def _normal_images(data: str, image_size: int, channels: int | None, max_samples: int | None,
                   log: Log = _say) -> torch.Tensor:
    """Normal images to fit on: ``train/good`` of an MVTec root, a folder, or any ``--data`` source."""
    from selfsup.data.mvtec import load_mvtec

    if _is_mvtec(data):
        return load_mvtec(data, "train", image_size, channels).images[:max_samples]
    if Path(data).is_dir():
        return _read_square(Path(data), image_size, channels, max_samples, log)[0]
    x, _ = open_source(data, image_size=image_size, channels=channels).arrays(max_samples)
    return torch.from_numpy(x)


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
    normalize: str = "none",
    max_samples: int | None = None,
    seed: int = 0,
    log: Log = _say,
) -> Path:
    """Fit a PatchCore memory bank on normal images; returns the bank's path.

    Features are the patch tokens of ``run``'s encoder (blocks ``layers``, default the two around
    mid-depth, 3x3-averaged), or raw ``pixel_patch`` x ``pixel_patch`` pixel patches when ``run``
    is None. ``data``: an MVTec-AD root (its ``train/good`` is used), an image folder (every image
    resized as a whole to a square) or any ``--data`` source. ``coreset`` is the fraction of all
    training patches kept. ``normalize`` "image" applies ``standardize_images`` to every image
    first (also when scoring). Writes the bank (default ``RUN/anomaly/patchcore.safetensors``, or
    ``runs/anomaly-raw-<time>/`` for raw pixels) and ``patchcore.json`` beside it, which names the
    run and image size so ``anomaly_score`` can rebuild the detector.
    """
    from selfsup.evaluate.anomaly import PatchCore

    if normalize not in ANOMALY_NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(ANOMALY_NORMALIZE)}, not {normalize!r}")
    encoder, channels = None, None
    if run is not None:
        encoder, spec, _ = load_encoder(run)
        channels, image_size = spec.channels, image_size or spec.image_size
    image_size = image_size or 64
    if out is None and run is None:
        out = Path("runs") / f"anomaly-raw-{time.strftime('%Y%m%d-%H%M%S')}" / ANOMALY_BANK
    elif out is None:
        out = (Path(run) if Path(run).is_dir() else Path(run).parent) / "anomaly" / ANOMALY_BANK
    out = Path(out)
    out = out / ANOMALY_BANK if out.suffix != ".safetensors" else out
    out.parent.mkdir(parents=True, exist_ok=True)
    images = _normal_images(data, image_size, channels, max_samples, log)
    what = f"{Path(run).name} encoder" if run is not None else f"raw {pixel_patch}x{pixel_patch} pixel patches"
    log(f"fitting PatchCore on {len(images)} normal images of {data} at {image_size}px with {what}")
    t0 = time.monotonic()
    model = PatchCore(layers=tuple(layers) if layers else None, pixel_patch=pixel_patch, coreset_size=coreset,
                      reweight=reweight, seed=seed)
    model.fit(encoder, standardize_images(images) if normalize == "image" else images)
    model.save(out)
    info = {"run": str(Path(run).resolve()) if run is not None else None, "image_size": image_size,
            "channels": int(images.shape[1]), "normalize": normalize, "data": str(data), "n_train": len(images),
            "memory_bank": list(model.memory_bank.shape), "patchcore": model.config(),
            "fit_seconds": round(time.monotonic() - t0, 2)}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"memory bank {tuple(model.memory_bank.shape)} saved to {out} in {info['fit_seconds']:.1f}s")
    return out


def load_anomaly(model: str | Path) -> tuple[Any, dict]:
    """The PatchCore detector saved by ``anomaly_fit`` (bank file or its folder) and its JSON."""
    from selfsup.evaluate.anomaly import PatchCore

    path = Path(model)
    path = path / ANOMALY_BANK if path.is_dir() else path
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no PatchCore bank at {path} (with {meta_path.name} beside it); run `anomaly fit`")
    info = json.loads(meta_path.read_text())
    encoder = load_encoder(info["run"])[0] if info["run"] else None
    return PatchCore.load(path, encoder), info


def anomaly_score(
    model: str | Path,
    data: str,
    *,
    out_dir: str | Path | None = None,
    max_figures: int = 4,
    report: bool = True,
    log: Log = _say,
) -> list[dict]:
    """Score ``data`` with a bank saved by ``anomaly_fit``: image scores and pixel heatmaps.

    An MVTec-AD root: its ``test/`` split against the masks in ``ground_truth/``; image and pixel
    AUROC per defect type and overall ("defect": "all") are merged into the run's ``metrics.json``
    (the bank's folder for raw pixels), heatmaps of up to ``max_figures`` images per defect go to
    ``OUT/heatmaps/<defect>.png`` and the anomaly section into ``report.html``. A plain image
    folder: scores only. Always writes ``OUT/scores.csv`` (path, defect, score); ``out_dir``
    defaults to the bank's folder. Returns the records (none without masks).
    """
    import csv

    from selfsup.data.mvtec import load_mvtec
    from selfsup.evaluate.anomaly import anomaly_records
    from selfsup.interpret.figures import plot_anomaly

    detector, info = load_anomaly(model)
    bank = Path(model) / ANOMALY_BANK if Path(model).is_dir() else Path(model)
    out_dir = Path(out_dir) if out_dir else bank.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    size, channels = info["image_size"], info["channels"]
    mvtec = _is_mvtec(data)
    if mvtec:
        test = load_mvtec(data, "test", size, channels)
        images, paths, defects = test.images, test.paths, list(test.defect)
    else:
        images, paths = _read_square(Path(data), size, channels, log=log)
        defects = [Path(p).parent.name if Path(p).parent != Path(data) else "" for p in paths]
    t0 = time.monotonic()
    scores, heatmaps = detector.score(standardize_images(images) if info.get("normalize") == "image" else images)
    log(f"scored {len(images)} images of {data} in {time.monotonic() - t0:.1f}s")
    with open(out_dir / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "defect", "score"])
        w.writerows([p, d, f"{float(s):.6g}"] for p, d, s in zip(paths, defects, scores.tolist(), strict=True))
    log(f"scores written to {out_dir / 'scores.csv'}")
    if not mvtec:
        return []

    run_dir = Path(info["run"]) if info["run"] and Path(info["run"]).is_dir() else bank.parent
    task = Path(data).resolve().name
    recs = anomaly_records(task, test, scores, heatmaps, "ssl" if info["run"] else "raw")
    for r in recs:
        r.update(image_size=size, coreset=info["patchcore"]["coreset_size"], memory_bank=info["memory_bank"][0],
                 n_train=info["n_train"], bank=str(bank))
    merge_records(run_dir / "metrics.json", recs)
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
        (figures / f"{name}.png").write_bytes(png)
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
    if info["run"] and (run_dir / "method.safetensors").is_file() and (run_dir / "config.yaml").is_file():
        try:
            method = load_method(run_dir)
        except (ValueError, KeyError, RuntimeError, FileNotFoundError) as e:
            log(f"report without the run's method: {e}")
    keep = np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int)
    path = build_report(run_dir, method=method, images=images[keep] if method is not None else None,
                        labels=labels[keep] if method is not None else None, class_names=class_names,
                        anomaly=anomaly)
    log(f"report written to {path}")


EXPORT_FORMATS = ("safetensors", "onnx", "hf", "timm")


def export(run: str | Path, format: str, out: str | Path | None = None, *, log: Log = _say) -> Path:
    """Deliver a run's encoder: ``safetensors`` (timm names + config metadata), ``onnx`` (pooled
    features, checked against torch in onnxruntime), ``hf`` (a ``transformers.ViTModel`` folder) or
    ``timm`` (timm-named weights + config)."""
    import shutil

    from selfsup.export.hf import export_hf, export_timm

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    run = Path(run)
    encoder, spec, enc_cfg = load_encoder(run)
    if format in ("hf", "timm") and enc_cfg.name != "vit":
        raise ValueError(f"--format {format} exports ViT encoders; this run's encoder is {enc_cfg.name}")
    default = {"safetensors": "encoder.safetensors", "onnx": "encoder.onnx", "hf": "hf", "timm": "timm"}[format]
    target = Path(out) if out else run / "export" / default
    if format == "safetensors":
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "encoder.safetensors", target)
    elif format == "onnx":
        from selfsup.export.onnx import check_onnx, export_onnx

        export_onnx(encoder, spec, target)
        x = torch.rand(3, spec.channels, spec.image_size, spec.image_size)
        diff = check_onnx(encoder, target, x)
        log(f"onnxruntime matches torch: max abs difference {diff:.2e}")
    elif format == "hf":
        export_hf(encoder, target)
    else:
        export_timm(encoder, target)
    log(f"exported {format} to {target}")
    return target
