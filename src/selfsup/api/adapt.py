"""Adaptation (``selfsup adapt``): a classifier from few labels; prediction with it (``selfsup
predict``). Orchestration only: the training lives in ``selfsup.adapt``."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from selfsup import runs
from selfsup.adapt.finetune import FinetuneRecipe
from selfsup.api.common import Log, say
from selfsup.data import open_source
from selfsup.data.spec import InputSpec
from selfsup.evaluate.records import merge_records, record


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
    log: Log = say,
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
    from selfsup.data.splits import sample_few
    from selfsup.evaluate.records import budget as budget_name

    if shots is not None and label_fraction is not None:
        raise ValueError("give --shots or --label-fraction, not both")
    run = Path(run)
    encoder, spec, enc_cfg = runs.load_encoder(run)
    src = open_source(data, **spec.reader_options())
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
    log: Log = say,
) -> dict:
    """Predict every readable sample of ``data`` with a classifier saved by ``adapt``; write a CSV.

    Columns: ``key``, ``pred`` (class index), ``pred_name``, ``prob_<class>`` per class. Works on
    unlabelled data; when ``data`` has labels (with the same class names) the accuracy is reported.
    Returns {"out", "n", "skipped", "accuracy"}.
    """
    from selfsup.adapt import load_classifier, write_predictions
    from selfsup.adapt import predict as run_classifier

    model, config = load_classifier(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    spec = InputSpec(**config["input_spec"])
    src = open_source(data, **spec.reader_options())
    preds = run_classifier(model, src.loader(batch_size, shuffle=False), max_samples, input_key=spec.input_key)
    names = config["class_names"]
    write_predictions(out, preds, names)
    same = src.spec.class_names is None or list(src.spec.class_names) == names
    acc = preds.accuracy() if same else None
    summary = {"out": str(out), "n": len(preds.keys), "skipped": preds.skipped.total, "accuracy": acc}
    log(f"wrote {len(preds.keys)} predictions of {src.name} to {out}; {preds.skipped.summary()}"
        + (f"; accuracy {acc:.4f} on the labelled ones" if acc is not None else ""))
    return summary


