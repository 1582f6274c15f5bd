"""Adaptation (``selfsup adapt``): a classifier from few labels; prediction with it (``selfsup
predict``). Orchestration only: the training lives in ``selfsup.adapt``."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from selfsup import lock, runs
from selfsup.adapt.finetune import FinetuneRecipe
from selfsup.api.common import Log, say
from selfsup.data import open_source
from selfsup.data.inputs import as_inputs, take
from selfsup.data.spec import MODALITIES, InputSpec
from selfsup.evaluate.records import merge_records, record
from selfsup.hardware import resolve_device


@lock.writes
def adapt(
    run: str | Path,
    data: str,
    *,
    shots: int | None = None,
    label_fraction: float | None = None,
    protocol: str = "finetune",
    out: str | Path | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    recipe: FinetuneRecipe | None = None,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    merge: bool = True,
    max_samples: int | None = None,
    test_data: str | None = None,
    device: str = "auto",
    log: Log = say,
    method: str | None = None,
) -> Path:
    """Train a classifier from a run's encoder on few labels of ``data``; returns the model folder.

    ``method`` is the deprecated name of ``protocol`` (kept for one release, with a warning).

    ``shots`` labels per class or a stratified ``label_fraction`` (all labels when neither) are
    drawn from ``data`` with ``seed``; ``val_fraction`` of them (default the recipe's, at least
    one per class that has two) is held out to choose the learning rate and the training length,
    then the classifier is re-trained on all of them (``adapt.tune.fit_tuned``). The held-out score
    is a *selection* score: it chose the recipe, so it is not a test score. ``test_data``, data
    that shares no sample with ``data``, gives a test score. ``protocol`` "finetune" (layer-wise lr
    decay 0.75) or "lora" (rank ``lora_rank`` adapters on the attention projections, merged into
    the weights when saving unless ``merge`` is False). Writes ``classifier.safetensors``,
    ``classifier.json`` and ``metrics.json`` to ``out`` (default
    ``RUN/classifiers/<protocol>-<budget>-seed<seed>``). The encoder trains on ``device``
    (``hardware.resolve_device``: "auto" = the accelerator when present).
    """
    from dataclasses import replace

    from selfsup.adapt import ADAPT_RECIPES, adapt_classifier, save_classifier
    from selfsup.data.sources import SkipCounter
    from selfsup.data.splits import check_disjoint, sample_few
    from selfsup.evaluate.metrics import scores_metrics
    from selfsup.evaluate.records import budget as budget_name

    if method is not None:
        warnings.warn("adapt(method=...) is deprecated; use protocol=...", DeprecationWarning, stacklevel=2)
        protocol = method
    method = protocol  # the records' and the folder's name for it
    if shots is not None and label_fraction is not None:
        raise ValueError("give --shots or --label-fraction, not both")
    encoder, spec, enc_cfg = runs.load_encoder(run, device=device)
    src = open_source(data, **spec.reader_options())
    skips, keys = SkipCounter(), []
    x, y = src.arrays(max_samples, skips=skips, keys=keys)
    if not (y >= 0).any():
        raise ValueError(f"{data}: adaptation needs labels (class subfolders, .cls members or labels key)")
    names = list(src.spec.class_names or [])
    names += [str(i) for i in range(len(names), int(y.max()) + 1)]
    budget = {"shots": shots} if shots is not None else {"label_fraction": label_fraction or 1.0}
    idx = sample_few(y, seed=seed, **{"fraction" if k == "label_fraction" else k: v for k, v in budget.items()})
    tag = f"{shots}shot" if shots is not None else f"{100 * budget['label_fraction']:g}pct"
    out = Path(out) if out else runs.results_dir(run, log) / "classifiers" / f"{method}-{tag}-seed{seed}"
    log(f"adapting {runs.source_name(run)} with {method} on {len(idx)} labels of {src.name} ({budget_name(budget)}, "
        f"{len(names)} classes, seed {seed}); {skips.summary()}")
    r = recipe or ADAPT_RECIPES[method]
    if val_fraction is not None:
        r = replace(r, val_fraction=val_fraction)
    test = None
    if test_data is not None:  # read and checked before training, so a leak costs no time
        test_src, test_keys = open_source(test_data, **spec.reader_options()), []
        test = test_src.arrays(max_samples, keys=test_keys)
        check_disjoint(take(x, idx), [src.sample_id(keys[i]) for i in idx], test[0],
                       [test_src.sample_id(k) for k in test_keys], data, test_data,
                       content=MODALITIES[spec.modality].dedupe)
    lock.hold(out)  # one writer per model folder; taken after the checks, so a refusal leaves no folder
    t0 = time.monotonic()
    model, info = adapt_classifier(encoder, take(x, idx), y[idx], len(names), method=method, recipe=r, seed=seed,
                                   lora_rank=lora_rank, lora_alpha=lora_alpha)
    info.update(run=runs.canonical(run), data=data, task=src.name, n_labels=len(idx),
                train_seconds=time.monotonic() - t0, **budget)
    who = "foundation" if runs.is_reference(run) else "ssl"
    common = dict(**budget, n_labels=len(idx), seed=seed, lr=info["lr"], epochs=info["epochs"])
    recs = []
    if info["val_top1"] is not None:
        recs.append(record(src.name, method, who, "selection_top1", [info["val_top1"]], **common,
                           n_val=info["n_val"], split="held-out labels that chose the lr and length: not a test score"))
    if test is not None:
        scores = scores_metrics(model.predict_proba(as_inputs(test[0])), test[1], len(names))
        info["test"] = {"data": test_data, "n": len(test[1]), **scores}
        recs += [record(src.name, method, who, m, [v], **common, n_test=len(test[1]), split=f"test: {test_data}")
                 for m, v in scores.items()]
    lock.hold(out)  # one writer per model folder (taken here: a refused run leaves no folder behind)
    save_classifier(model, out, spec=spec, encoder_config=enc_cfg, class_names=names, merge=merge, info=info)
    merge_records(out / "metrics.json", recs)
    chose = f"lr {info['lr']:.3g} and {info['epochs']:.1f} epochs chosen by {info['selection']}"
    sel = (f"; selection score {info['val_top1']:.4f} on {info['n_val']} held-out labels (not a test score)"
           if info["val_top1"] is not None else "")
    tested = (f"; test top-1 {info['test']['top1']:.4f} on {info['test']['n']} samples of {test_data}"
              if test is not None else "; give --test-data for a test score")
    log(f"trained {info['trainable_params']:,} parameters in {info['train_seconds']:.1f}s; {chose}{sel}{tested}; "
        f"classifier saved to {out}")
    return out


def predict(
    model_dir: str | Path,
    data: str,
    out: str | Path = "preds.csv",
    *,
    max_samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    log: Log = say,
) -> dict:
    """Predict every readable sample of ``data`` with a classifier saved by ``adapt``; write a CSV.

    Columns: ``key``, ``pred`` (class index), ``pred_name``, ``prob_<class>`` per class. Works on
    unlabelled data; when ``data`` has labels (with the same class names) the accuracy is reported.
    Returns {"out", "n", "skipped", "accuracy"}. The classifier runs on ``device``
    (``hardware.resolve_device``).
    """
    from selfsup.adapt import load_classifier, write_predictions
    from selfsup.adapt import predict as run_classifier

    model, config = load_classifier(model_dir, device=resolve_device(device))
    spec = InputSpec(**config["input_spec"])
    src = open_source(data, **spec.reader_options())
    preds = run_classifier(model, src.loader(batch_size, shuffle=False), max_samples, input_key=spec.input_keys)
    names = config["class_names"]
    write_predictions(out, preds, names)
    same = src.spec.class_names is None or list(src.spec.class_names) == names
    acc = preds.accuracy() if same else None
    summary = {"out": str(out), "n": len(preds.keys), "skipped": preds.skipped.total, "accuracy": acc}
    log(f"wrote {len(preds.keys)} predictions of {src.name} to {out}; {preds.skipped.summary()}"
        + (f"; accuracy {acc:.4f} on the labelled ones" if acc is not None else ""))
    return summary


