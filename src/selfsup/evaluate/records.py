"""Result records: the machine-readable shape of every measured number in ``metrics.json``.

A record is one metric of one (task, protocol, encoder, label budget), summarised over seeds:
``{"task", "protocol", "encoder", "shots" | "label_fraction", "metric", "mean", "std", "n_seeds",
"values", ...extra}``. ``std`` is the population standard deviation (numpy ``ddof=0``) of the
per-seed values, which are kept in ``values`` so any other summary can be recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfsup.files import write_json
from selfsup.lock import exclusive

# The vocabulary of records, in the order tables and plots show it; every writer and reader uses these.
BUDGET_KEYS = ("shots", "label_fraction")  # labels per class, or a fraction of the labelled pool
ENCODERS = {  # what was measured
    "ssl": "this run's pretrained encoder",
    "foundation": "a public pretrained model as published (--foundation, or a model reference as RUN), "
                  "under the same protocols and tuning",
    "scratch": "the same network trained from random weights on the same labels",
    "raw": "the same probe on the raw input (pixels; a table's numbers, missing flags and one-hot categories, "
           "so the linear probe is a logistic regression; series values)",
    "gbdt": "gradient-boosted trees on the raw table (scikit-learn HistGradientBoosting, tuned by cross-validation)",
    "minirocket": "MiniRocket features + ridge classifier, alpha by cross-validation (Dempster et al. 2021)",
    "minirocket-features": "MiniRocket features (fitted on the unlabelled pool) under the same protocol",
    "dlinear": "a linear map from the lookback window to the horizon (DLinear-style, Zeng et al. 2023)",
}
PROTOCOLS = {  # how it was measured
    "knn": "kNN (frozen features)",
    "linear": "Linear probe (frozen features)",
    "semi": "Label propagation over the unlabelled pool (frozen features)",
    "hybrid": "Linear probe on features + raw input",
    "finetune": "Fine-tuning",
    "lora": "LoRA",
    "zero-shot": "Zero-shot",
    "retrieval": "Retrieval",
    "supervised": "Supervised on the raw input",
    "anomaly": "Anomaly detection",
    "forecast-linear": "Forecasting, linear head (frozen encoder)",
    "forecast-finetune": "Forecasting, fine-tuned",
    "pretrain": "Pretraining",
    "monitor": "kNN monitor during pretraining (--monitor; leave-one-out, k 20)",
}
METRICS = {  # what number
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "mse": "MSE",
    "mae": "MAE",
}
DETECTORS = {  # how an anomaly score was made (records of protocol "anomaly" on tables and series)
    "reconstruction": "the masked model's reconstruction error",
    "knn": "distance to the k-th nearest training sample (in the encoder's embedding space for ssl)",
    "iforest": "IsolationForest (Liu et al. 2008)",
    "ensemble": "mean percentile (among the training bank's scores) of the SSL score and IsolationForest's",
}
PRETRAIN_METRICS = ("final_loss", "steps", "seconds", "images_per_s", "skipped_samples", "nonfinite_steps")
LOWER_IS_BETTER = ("loss", "error", "err", "time", "seconds", "nonfinite", "skipped", "mse", "mae")  # name parts

# What a record measured; a new record replaces an old one with the same values of these fields.
# "baseline" names the other side of a verdict, "peer" a compared library (benchmarks), "defect" a
# slice of an anomaly-detection test set, "detector" how an anomaly score was made, "horizon" the
# steps a forecast looks ahead, "weights" the file scored when it is not the run's encoder.safetensors
# (e.g. encoder-last.safetensors: its records sit beside the run's own instead of replacing them).
IDENTITY = ("task", "protocol", "encoder", *BUDGET_KEYS, "metric", "baseline", "peer", "defect", "detector",
            "horizon", "weights")


def record(
    task: str,
    protocol: str,
    encoder: str,
    metric: str,
    values: list[float],
    *,
    shots: int | None = None,
    label_fraction: float | None = None,
    **extra,
) -> dict:
    """One record from per-seed ``values``; give ``shots`` or ``label_fraction`` (or neither)."""
    if shots is not None and label_fraction is not None:
        raise ValueError("a record has shots or label_fraction, not both")
    if not values:
        raise ValueError("a record needs at least one value")
    v = np.asarray(values, dtype=np.float64)
    out: dict = {"task": task, "protocol": protocol, "encoder": encoder}
    if shots is not None:
        out["shots"] = int(shots)
    if label_fraction is not None:
        out["label_fraction"] = float(label_fraction)
    out.update(metric=metric, mean=float(v.mean()), std=float(v.std(ddof=0)), n_seeds=len(v),
               values=[float(x) for x in v])
    out.update(extra)
    return out


def identity(rec: dict) -> tuple:
    """The merge key of a record: the fields of ``IDENTITY`` (missing ones count as None)."""
    return tuple(rec.get(k) for k in IDENTITY)


def load_records(path: str | Path) -> list[dict]:
    """Records in ``path`` (a JSON list); an absent file has none."""
    path = Path(path)
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path} should hold a JSON list of records, found {type(data).__name__}")
    return data


def merge_records(path: str | Path, new: list[dict]) -> list[dict]:
    """Merge ``new`` into the records at ``path``: same identity replaces in place, others append.

    Written atomically as strict JSON (``files.write_json``: a non-finite value is null, with the
    reason), under an exclusive lock beside the file (``lock.exclusive``), so merges from several
    processes at once lose nothing. Returns the merged list.
    """
    path = Path(path)
    with exclusive(path):
        return _merge(path, new)


def _merge(path: Path, new: list[dict]) -> list[dict]:
    records = load_records(path)
    position = {identity(r): i for i, r in enumerate(records)}
    for rec in new:
        key = identity(rec)
        if key in position:
            records[position[key]] = rec
        else:
            position[key] = len(records)
            records.append(rec)
    write_json(path, records)  # atomic, strict JSON: a NaN is written as null with the reason
    return records


def budget_kind(rec: dict) -> str | None:
    """Which of ``BUDGET_KEYS`` a record's label budget is given in; None for a record without one."""
    return next((k for k in BUDGET_KEYS if rec.get(k) is not None), None)


def budget_order(rec: dict) -> tuple[int, float]:
    """Sort key of a record's budget: shots ascending, then fractions ascending, then none."""
    kind = budget_kind(rec)
    if kind is None and rec.get("horizon") is not None:
        return (len(BUDGET_KEYS), float(rec["horizon"]))
    return (BUDGET_KEYS.index(kind), float(rec[kind])) if kind else (len(BUDGET_KEYS), 0.0)


def rank_in(vocabulary: dict | tuple, name: str) -> int:
    """Position of ``name`` in one of the vocabularies above; unknown names after all known ones."""
    names = list(vocabulary)
    return names.index(name) if name in names else len(names)


def lower_is_better(metric: str) -> bool:
    return any(w in metric.lower() for w in LOWER_IS_BETTER)


def column(rec: dict) -> str:
    """The encoder as a table column names it: "ssl", "raw (iforest)", "ssl (lightly)"."""
    extra = [rec[k] for k in ("peer", "detector") if rec.get(k)]
    return str(rec.get("encoder", "?")) + (f" ({', '.join(map(str, extra))})" if extra else "")


def budget(rec: dict) -> str:
    """Human label of a record's label budget: "5-shot", "10%" or "all" (a forecast: its horizon)."""
    if rec.get("horizon") is not None:
        return f"H={rec['horizon']}"
    if rec.get("shots") is not None:
        return f"{rec['shots']}-shot"
    if rec.get("label_fraction") is not None:
        return f"{100 * rec['label_fraction']:g}%"
    return "all"


def format_table(records: list[dict]) -> str:
    """Plain-text table: task, protocol, encoder (peer), budget, metric, mean ± std, seeds."""
    header = ("task", "protocol", "encoder", "budget", "metric", "mean ± std", "seeds")
    rows = [header] + [
        (
            str(r.get("task", "")),
            str(r.get("protocol", "")),
            column(r),
            budget(r),
            str(r.get("metric", "")),
            f"{r['mean']:.4f} ± {r.get('std', 0.0):.4f}",
            str(r.get("n_seeds", "")),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = [
    "BUDGET_KEYS", "DETECTORS", "ENCODERS", "IDENTITY", "LOWER_IS_BETTER", "METRICS", "PRETRAIN_METRICS", "PROTOCOLS",
    "budget", "budget_kind", "budget_order", "column", "format_table", "identity", "load_records", "lower_is_better",
    "merge_records", "rank_in", "record",
]
