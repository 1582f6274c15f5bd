"""Pretraining (``selfsup pretrain``) and the demo (``selfsup demo``): orchestration only."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed, runs
from selfsup.adapt.finetune import FinetuneRecipe
from selfsup.api.common import Log, say
from selfsup.api.evaluate import evaluate, report
from selfsup.config import ConfigError, RunConfig, build_config, dump_config, load_config
from selfsup.data import open_source
from selfsup.encoders.sizing import encoder_width, on_gpu, resolve_geometry
from selfsup.evaluate.fewshot import DEFAULT_FINETUNE_SEEDS, DEFAULT_SEEDS
from selfsup.evaluate.records import PRETRAIN_METRICS, merge_records, record
from selfsup.methods import build_method


def _open(cfg: RunConfig):
    d = cfg.data
    return open_source(d.path, image_size=d.image_size, channels=d.channels, images_key=d.images_key,
                       labels_key=d.labels_key)


def _resume_target(resume: str | Path | bool, out: str | Path | None) -> Path | None:
    """The run folder to continue: ``resume`` itself, or ``out`` for ``True`` / "latest" (the folder
    the same command writes). None: ``out`` holds no run yet, so this command starts it there."""
    latest = resume is True or str(resume) == "latest"
    target = out
    if not latest:
        if target and Path(target).resolve() != Path(resume).resolve():
            raise ConfigError(f"--resume {resume} and --out {target} name different folders; give one of them")
        return Path(resume)
    if not target:
        newest = sorted(runs.ROOT.glob(f"*/{runs.CONFIG}"), key=lambda p: p.stat().st_mtime)
        hint = f" (newest here: {newest[-1].parent})" if newest else ""
        raise ConfigError(f"--resume without a folder continues --out: add --out RUN, or write --resume RUN{hint}")
    return Path(target) if (Path(target) / runs.CONFIG).is_file() else None


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
    resume: str | Path | bool | None = None,
    progress: bool | None = None,
    log: Log = say,
) -> Path:
    """Pretrain an encoder; returns the run folder.

    ``resume``: a run folder to continue from its newest good checkpoint, or True / "latest" to
    continue ``out`` (and start it there if it holds no run yet, so one command both starts and
    restarts a job). ``data`` and ``method``, when given with a resume, must be the run's.
    """
    from selfsup.train.checkpoint import newest_good_checkpoint  # Lightning loads only when training
    from selfsup.train.engine import fit

    length = {k: v for k, v in {"budget": budget, "steps": steps, "epochs": epochs}.items() if v is not None}
    run_dir = None
    if resume is not None and resume is not False:
        run_dir = _resume_target(resume, out)
        if run_dir is None:
            log(f"{out} holds no run yet; starting it there")
    if run_dir is not None:
        cfg = runs.load_run_config(run_dir)
        for given, kept, flag in ((data, cfg.data.path, "--data"), (method, cfg.method_name, "--method")):
            if given is not None and str(given) != kept:
                raise ConfigError(f"{run_dir} was started with {flag} {kept}, not {given}: drop {flag} to continue "
                                  "it, or choose another --out for a new run")
        raw = cfg.model_dump(mode="json")
        if length:
            raw["train"].update({"budget": None, "steps": None, "epochs": None, **length})
        cfg = build_config(raw, list(overrides))
        ckpt = newest_good_checkpoint(run_dir / runs.CHECKPOINTS)
        if ckpt is None:
            log(f"no usable checkpoint in {run_dir / runs.CHECKPOINTS}; starting this run from the beginning")
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
        run_dir = runs.new_run_dir(cfg.method_name, out or cfg.out)
        ckpt = None
    source = _open(cfg)
    spec = source.spec
    if spec.input_key == "image":  # a size the model can read, sized to the machine (encoders.sizing)
        chosen = cfg.encoder.model_fields_set
        geo = resolve_geometry(spec.image_size, spec.channels, image_size=cfg.data.image_size,
                               patch_size=cfg.encoder.patch_size if "patch_size" in chosen else None,
                               width=encoder_width(cfg.encoder), vit=cfg.encoder.name == "vit",
                               gpu=on_gpu(cfg.train.accelerator))
        source.set_image_size(geo.image_size)
        if geo.patch_size is not None:
            cfg.encoder.patch_size = geo.patch_size
        if cfg.data.image_size is None or "patch_size" not in chosen:
            log(geo.why)
    cfg.data.image_size, cfg.data.channels = spec.image_size, spec.channels
    if distributed.is_global_zero():
        dump_config(cfg, run_dir / runs.CONFIG)
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
    runs.save_encoder(model, cfg, spec, run_dir)
    hist = module.loss_history
    tail = [v for _, v in hist[-max(1, len(hist) // 10):]] or [float("nan")]
    measured = {"final_loss": float(np.mean(tail)), "steps": float(module.global_step), "seconds": module.elapsed,
                "images_per_s": module.images_seen / max(module.elapsed, 1e-9),
                "skipped_samples": float(module.n_skipped), "nonfinite_steps": float(module.bad_steps)}
    recs = [record(source.name, "pretrain", "ssl", m, [measured[m]], method=cfg.method_name) for m in PRETRAIN_METRICS]
    merge_records(run_dir / runs.METRICS, recs)
    (run_dir / runs.LOSS_HISTORY).write_text(json.dumps(hist))
    skipped = f"; skipped {module.n_skipped} unreadable samples" if module.n_skipped else ""
    if module.skipped_examples:
        skipped += f" (e.g. {', '.join(module.skipped_examples[:3])})"
    log(f"done: {module.global_step} steps in {module.elapsed:.0f}s, final loss {np.mean(tail):.4f}{skipped}")
    return run_dir


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


# The demo's fine-tuning protocol, the same for the SSL encoder and the scratch baseline: a grid of
# two learning rates and a shorter patience than the default recipe's, so 18 tuned fine-tunings fit
# in about two minutes on 2 cores.
DEMO_FINETUNE = FinetuneRecipe(batch_size=32, lr_grid=(0.5, 2.0), patience=5, min_steps=50)


def demo(out: str | Path | None = None, budget: str = "2m", *, log: Log = say,
         shots: Sequence[int] = (1, 5, 10), seeds: int = DEFAULT_SEEDS, finetune_seeds: int = DEFAULT_FINETUNE_SEEDS,
         overrides: Sequence[str] = ()) -> list[dict]:
    """MAE on the built-in digits (train half, no labels), few-label evaluation on the test half
    beside the raw-pixel and from-scratch baselines with the verdict, the table printed and
    ``report.html`` written. Returns the evaluation records."""
    out = Path(out) if out else runs.timestamped("demo")
    t0 = time.monotonic()
    run = pretrain("digits:train", "mae", overrides=[*DEMO_OVERRIDES, *overrides], out=out, budget=budget, log=log)
    records = evaluate(run, "digits:test", train_data="digits:train", shots=list(shots), seeds=seeds,
                       finetune_seeds=finetune_seeds, log=log, recipe=DEMO_FINETUNE)
    report_path = report(run, data="digits:test", log=log)
    log(f"demo finished in {time.monotonic() - t0:.0f}s; open {report_path}")
    return records


