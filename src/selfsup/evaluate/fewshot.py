"""The few-label protocol: what an encoder is worth with K labels per class or a fraction of them.

For each label budget and seed, a labelled subset is drawn from the training pool; kNN and linear
probes run on frozen features (extracted once for every image), fine-tuning trains a copy of the
encoder. Beside the SSL encoder, two baselines get the same labels: ``raw`` (the same probe on
raw pixels) and ``scratch`` (the same fine-tune recipe from a fresh initialisation). The test
split is only ever scored: no training, early stopping or model selection touches it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from selfsup.adapt.finetune import FinetuneRecipe, finetune, lora_recipe
from selfsup.adapt.lora import add_lora
from selfsup.data.spec import as_tensor
from selfsup.data.splits import sample_few
from selfsup.encoders.inference import module_device
from selfsup.evaluate.features import cached_features, raw_features
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import linear_probe
from selfsup.evaluate.records import record

# What `selfsup evaluate` runs unless told; LoRA (adapters on the attention projections,
# ``selfsup.adapt.lora``) needs peft, so it runs when asked (and in the label-efficiency curve).
DEFAULT_PROTOCOLS = ("knn", "linear", "finetune")
FEW_LABEL_PROTOCOLS = (*DEFAULT_PROTOCOLS, "lora")


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
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
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
    unknown = set(protocols) - set(FEW_LABEL_PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(FEW_LABEL_PROTOCOLS)}")
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

    frozen = [p for p in ("knn", "linear") if p in protocols]
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


__all__ = ["evaluate_few_label", "scores_metrics", "DEFAULT_PROTOCOLS", "FEW_LABEL_PROTOCOLS"]
