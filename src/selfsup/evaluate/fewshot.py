"""The few-label protocol: what an encoder is worth with K labels per class or a fraction of them.

For each label budget and seed, a labelled subset is drawn from the training pool; kNN and linear
probes run on frozen features (extracted once for every image), fine-tuning trains a copy of the
encoder. Beside the SSL encoder, two baselines get the same labels: ``raw`` (the same probe on
raw pixels) and ``scratch`` (the same fine-tune recipe from a fresh initialisation). The test
split is only ever scored: no training, early stopping or model selection touches it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from selfsup.adapt.finetune import lora_recipe
from selfsup.adapt.lora import add_lora
from selfsup.evaluate.features import as_tensor, cached_features, module_device, raw_features
from selfsup.evaluate.finetune import FinetuneRecipe, finetune
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import linear_probe
from selfsup.evaluate.records import record

PROTOCOLS = ("knn", "linear", "finetune")
# LoRA (adapters on the attention projections, ``selfsup.adapt.lora``) needs peft: it runs only when asked
ALL_PROTOCOLS = (*PROTOCOLS, "lora")


def sample_few(
    labels: np.ndarray, *, shots: int | None = None, fraction: float | None = None, seed: int
) -> np.ndarray:
    """Sorted indices of a labelled subset: ``shots`` per class, or a stratified ``fraction``.

    Samples with label < 0 (unknown) are never drawn. A class with fewer than ``shots`` samples
    gives all it has (with a warning); a fraction takes round(fraction * n_c), at least 1, per
    class. For one seed the subsets are nested: the 5-shot draw is part of the 10-shot draw.
    """
    if (shots is None) == (fraction is None):
        raise ValueError("give exactly one of shots or fraction")
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked, short = [], 0
    for c in np.unique(labels[labels >= 0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = shots if shots is not None else max(1, round(fraction * len(members)))
        short += len(members) < n
        picked.append(members[:n])
    if short:
        warnings.warn(f"{short} class(es) have fewer than {shots} labelled samples; took all of them",
                      stacklevel=2)
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def split_pool_test(
    labels: np.ndarray, test_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of one labelled set into (pool indices, test indices), both sorted.

    Each class with at least 2 samples puts at least one in each side; a singleton stays in the pool.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for c in np.unique(labels[labels >= 0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = 0 if len(members) < 2 else min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test.append(members[:n_test])
        pool.append(members[n_test:])
    empty = np.empty(0, dtype=np.int64)
    return (np.sort(np.concatenate(pool)) if pool else empty, np.sort(np.concatenate(test)) if test else empty)


def scores_metrics(probs: torch.Tensor, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top1 accuracy of class probabilities (M, C); for 2 classes also AUROC of P(class 1)."""
    probs = probs.float().numpy()
    out = {"top1": float((probs.argmax(1) == labels).mean())}
    if num_classes == 2 and len(np.unique(labels)) == 2:
        out["auroc"] = float(roc_auc_score(labels, probs[:, 1]))
    return out


def evaluate_few_label(
    *,
    encoder: nn.Module,
    make_scratch_encoder: Callable[[], nn.Module] | None,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray,
    test_images: np.ndarray | torch.Tensor,
    test_labels: np.ndarray,
    num_classes: int,
    task: str,
    protocols: Sequence[str] = PROTOCOLS,
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    recipe: FinetuneRecipe | None = None,
    feature_cache_dir: str | Path | None = None,
    raw_max_side: int | None = 64,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Records (see ``records.record``) for every budget x protocol x encoder x metric.

    train_images / test_images uint8 (N, C, H, W) / (M, C, H, W); labels (N,) / (M,) ints in
    [0, num_classes) (train labels < 0 are never drawn). Encoders: "ssl" (``encoder``) for every
    protocol, "raw" pixels for knn and linear, and "scratch" (``make_scratch_encoder()``, seeded
    per seed) under "finetune", run even when only frozen protocols are asked so the baseline is
    always there, unless ``make_scratch_encoder`` is None. Metrics: "top1", plus "auroc" for 2
    classes. Each seed redraws the labelled subset and reseeds training. SSL features are cached in
    ``feature_cache_dir`` when given; raw pixels are area-averaged to at most ``raw_max_side``.

    "lora" (Hu et al. 2021, only when asked) freezes the SSL encoder and trains rank-8 adapters on
    its attention projections plus the head, with ``recipe`` turned by ``lora_recipe`` (10x the
    lr, no layer decay).
    """
    unknown = set(protocols) - set(ALL_PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(ALL_PROTOCOLS)}")
    budgets = [("shots", int(k)) for k in shots or ()] + [("label_fraction", float(f)) for f in label_fractions or ()]
    if not budgets:
        raise ValueError("give shots and/or label_fractions")
    train_images, test_images = as_tensor(train_images), as_tensor(test_images)
    train_labels, test_labels = np.asarray(train_labels).astype(np.int64), np.asarray(test_labels).astype(np.int64)
    if test_labels.min(initial=0) < 0 or test_labels.max(initial=0) >= num_classes:
        raise ValueError(f"test labels must lie in [0, {num_classes})")
    if train_labels.max(initial=0) >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes}) (or be < 0 for unknown)")
    log = progress or (lambda msg: None)

    frozen = [p for p in PROTOCOLS if p in protocols and p != "finetune"]
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if frozen:
        log(f"{task}: extracting features of {len(train_images)} + {len(test_images)} images")
        feats["ssl"] = tuple(cached_features(encoder, x, feature_cache_dir, device=device)
                             for x in (train_images, test_images))
        feats["raw"] = (raw_features(train_images, raw_max_side), raw_features(test_images, raw_max_side))

    runs: list[tuple[str, str]] = [(p, e) for p in frozen for e in ("ssl", "raw")]
    if "finetune" in protocols:
        runs.append(("finetune", "ssl"))
    if "lora" in protocols:
        runs.append(("lora", "ssl"))
        lora = lora_recipe(recipe or FinetuneRecipe())
    if make_scratch_encoder is not None:
        runs.append(("finetune", "scratch"))

    records = []
    for kind, amount in budgets:
        values: dict[tuple[str, str, str], list[float]] = {}
        n_labels = []
        for seed in seeds:
            idx = sample_few(train_labels, seed=seed, **{"shots" if kind == "shots" else "fraction": amount})
            n_labels.append(len(idx))
            y = train_labels[idx]
            for protocol, enc in runs:
                if protocol == "knn":
                    probs = knn_predict(feats[enc][0][idx], torch.from_numpy(y), feats[enc][1], num_classes)
                elif protocol == "linear":
                    probs = linear_probe(feats[enc][0][idx], torch.from_numpy(y), feats[enc][1], num_classes, seed)
                elif protocol == "lora":
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        model = add_lora(copy.deepcopy(encoder))
                    probs = finetune(model, train_images[idx], y, test_images, num_classes, seed=seed,
                                     recipe=lora, device=device)
                else:
                    model = encoder
                    if enc == "scratch":
                        with torch.random.fork_rng(devices=[]):
                            torch.manual_seed(seed)
                            model = make_scratch_encoder()
                        model = model.to(device if device is not None else module_device(encoder))
                    probs = finetune(model, train_images[idx], y, test_images, num_classes, seed=seed,
                                     recipe=recipe, device=device)
                for metric, v in scores_metrics(probs, test_labels, num_classes).items():
                    values.setdefault((protocol, enc, metric), []).append(v)
                log(f"{task} {kind}={amount:g} seed {seed}: {protocol}/{enc} "
                    f"top1 {values[(protocol, enc, 'top1')][-1]:.4f}")
        for (protocol, enc, metric), vals in values.items():
            records.append(record(task, protocol, enc, metric, vals, **{kind: amount},
                                  n_labels=int(np.mean(n_labels)), n_test=len(test_labels)))
    return records


__all__ = ["sample_few", "split_pool_test", "evaluate_few_label", "scores_metrics", "PROTOCOLS", "ALL_PROTOCOLS"]
