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
from selfsup.train.checkpoint import newest_good_checkpoint
from selfsup.train.engine import fit

Log = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, flush=True)


def new_run_dir(method: str, out: str | Path | None) -> Path:
    """A fresh run folder; an existing run is never overwritten."""
    run = Path(out) if out else Path("runs") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run / "config.yaml").exists():
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
        train = {"budget": None, "steps": None, "epochs": None, **length} if length else None
        cfg = load_config(config, list(overrides), method=method, data={"path": data} if data else None,
                          train=train)
        run_dir = new_run_dir(cfg.method_name, out or cfg.out)
        ckpt = None
    source = _open(cfg)
    spec = _spec_of(source)
    cfg.data.image_size, cfg.data.channels = spec.image_size, spec.channels
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


def demo(out: str | Path | None = None, budget: str = "3m", *, log: Log = _say,
         shots: Sequence[int] = (1, 5, 10), seeds: int = 3, overrides: Sequence[str] = ()) -> list[dict]:
    """MAE on the built-in digits (train half, no labels), few-label evaluation on the test half,
    the table printed and ``report.html`` written. Returns the evaluation records."""
    out = Path(out) if out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.monotonic()
    run = pretrain("digits:train", "mae", overrides=[*DEMO_OVERRIDES, *overrides], out=out, budget=budget, log=log)
    records = evaluate(run, "digits:test", train_data="digits:train", shots=list(shots), seeds=seeds, log=log)
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
