"""Fine-tuning with the recipe chosen on labelled data only, the same way for every encoder.

The few-label verdict compares a pretrained encoder with baselines (the same network from
scratch, a frozen public model). It is only fair if each gets the same care, so for each set of
labels ``fit_tuned``:

1. holds out a stratified ``recipe.val_fraction`` of the labels (at least one per class; the test
   set never enters this module),
2. trains one model per learning rate of a small grid (``recipe.lr`` x ``recipe.lr_grid``), each
   until its held-out score stops improving (``adapt.finetune.train_classifier``),
3. keeps the learning rate with the best held-out accuracy (then loss) and the number of epochs
   at which that run was best,
4. trains the final model on all the labels with that learning rate for that many epochs.

When a class has a single label nothing can be held out: the grid's middle learning rate is used
and training stops when the training loss stops improving. Everything chosen is returned, so the
records can say what each encoder got.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np
import torch
from torch import nn

from selfsup.adapt.finetune import ADAPT_RECIPES, Classifier, FinetuneRecipe, epoch_steps, train_classifier
from selfsup.adapt.lora import add_lora
from selfsup.data.inputs import Inputs, as_inputs, take, to_device
from selfsup.data.splits import stratified_split
from selfsup.encoders.inference import module_device


def _seeded(seed: int, device: torch.device, fn: Callable[[torch.Generator], object]) -> object:
    """``fn(generator)`` with the global RNG seeded by ``seed`` and restored afterwards."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return fn(torch.Generator().manual_seed(seed))


def fit_tuned(
    make_model: Callable[[], Classifier],
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    recipe: FinetuneRecipe,
    *,
    seed: int,
    device: torch.device,
) -> tuple[Classifier, dict]:
    """Choose the learning rate and length on held-out labels, then train on all ``labels``.

    ``make_model()`` builds a fresh classifier (it is called under a fixed seed, so every
    candidate starts from the same weights). images uint8 (N, C, H, W) (or any modality's inputs,
    ``data.inputs``), labels (N,). Returns the
    final model in eval mode and {"lr", "steps", "epochs", "selection", "val_top1", "val_loss",
    "n_train", "n_val", "hit_cap", "seconds" (the final training's), "grid": [per learning rate:
    lr, val_top1, val_loss, best_step, stopped, seconds]}.
    """
    x = to_device(as_inputs(images), device)
    y = torch.as_tensor(np.asarray(labels)).long().to(device)
    train_idx, val_idx = stratified_split(y.cpu().numpy(), recipe.val_fraction, seed)
    counts = np.bincount(y.cpu().numpy())
    if counts[counts > 0].min() < 2:  # a class with one label: nothing to hold out for it
        lr = recipe.lr * sorted(recipe.lr_grid)[len(recipe.lr_grid) // 2]
        r = replace(recipe, lr=lr)
        t0 = time.perf_counter()
        model, fit = _seeded(seed, device, lambda g: _train(make_model, x, y, r, g))
        info = {"lr": lr, "steps": fit["steps"], "epochs": fit["steps"] / epoch_steps(len(y), r.batch_size),
                "selection": "none (a class has one label): middle lr, stopped when the training loss stopped "
                             "improving", "val_top1": None, "val_loss": None, "n_train": len(y), "n_val": 0,
                "hit_cap": fit["stopped"] == "cap", "seconds": time.perf_counter() - t0, "grid": []}
        return model, info
    val = (take(x, val_idx), y[val_idx])
    part = take(x, train_idx)
    grid = []
    for m in recipe.lr_grid:
        r = replace(recipe, lr=recipe.lr * m)
        t0 = time.perf_counter()
        _, fit = _seeded(seed, device, lambda g, r=r: _train(make_model, part, y[train_idx], r, g, val=val))
        grid.append({"lr": r.lr, "val_top1": fit["val_top1"], "val_loss": fit["val_loss"],
                     "best_step": fit["best_step"], "stopped": fit["stopped"], "seconds": time.perf_counter() - t0})
    best = max(grid, key=lambda c: (c["val_top1"], -c["val_loss"]))
    epochs = best["best_step"] / epoch_steps(len(train_idx), recipe.batch_size)
    steps = max(1, round(epochs * epoch_steps(len(y), recipe.batch_size)))
    final = replace(recipe, lr=best["lr"])
    t0 = time.perf_counter()
    model, _ = _seeded(seed, device, lambda g: _train(make_model, x, y, final, g, steps=steps))
    info = {"lr": best["lr"], "steps": steps, "epochs": epochs,
            "selection": f"lr and length chosen on {len(val_idx)} held-out labels, then re-trained on all",
            "val_top1": best["val_top1"], "val_loss": best["val_loss"], "n_train": len(train_idx),
            "n_val": len(val_idx), "hit_cap": any(c["stopped"] == "cap" for c in grid),
            "seconds": time.perf_counter() - t0, "grid": grid}
    return model, info


def _train(make_model: Callable[[], Classifier], x: Inputs, y: torch.Tensor, recipe: FinetuneRecipe,
           generator: torch.Generator, **kwargs) -> tuple[Classifier, dict]:
    model = make_model().to(y.device)
    if not any(p.requires_grad for p in model.encoder.parameters()):
        warnings.warn("the encoder has no trainable parameters (frozen?): only the head is trained", stacklevel=3)
    return model, train_classifier(model, x, y, recipe, generator=generator, **kwargs)


def finetune(
    encoder: nn.Module,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_images: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    recipe: FinetuneRecipe | None = None,
    lora: bool = False,
    device: str | torch.device | None = None,
    eval_batch_size: int = 256,
) -> tuple[torch.Tensor, dict]:
    """The fine-tune (or, with ``lora``, LoRA) protocol: ``fit_tuned`` on a deep copy of ``encoder``
    (left untouched) + a linear head; returns test probabilities (M, C) and what was chosen.

    train_images uint8 (N, C, H, W), train_labels (N,) in [0, C), test_images uint8 (M, C, H, W); or
    any modality's inputs (``data.inputs``: series (N, C, T), a table's dict).
    ``seed`` fixes the split, the head, the batches and the augmentation; the caller's global RNG
    state is restored afterwards. ``device`` defaults to the encoder's.
    """
    r = recipe or FinetuneRecipe()
    device = torch.device(device) if device is not None else module_device(encoder)

    def make() -> Classifier:
        body = copy.deepcopy(encoder)
        return Classifier(add_lora(body) if lora else body, num_classes)

    model, info = fit_tuned(make, train_images, train_labels, r, seed=seed, device=device)
    return model.predict_proba(as_inputs(test_images), eval_batch_size), info


def adapt_classifier(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    method: str = "finetune",
    recipe: FinetuneRecipe | None = None,
    seed: int = 0,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    device: str | torch.device | None = None,
) -> tuple[Classifier, dict]:
    """Train a classifier on a deep copy of ``encoder`` (left untouched) from labelled images only.

    images uint8 (N, C, H, W), labels (N,) in [0, num_classes). ``method`` "finetune" trains
    everything with layer-wise lr decay; "lora" freezes the encoder, adds rank-``lora_rank``
    adapters to the attention projections (``adapt.lora``) and trains them with the head. The
    learning rate and length are chosen on held-out labels (``fit_tuned``); the held-out score is
    a *selection* score, not a test score. Returns (Classifier in eval mode, info).
    """
    if method not in ADAPT_RECIPES:
        raise ValueError(f"unknown adaptation method {method!r}; choose from {', '.join(ADAPT_RECIPES)}")
    r = recipe or ADAPT_RECIPES[method]
    if method == "lora" and r.layer_decay != 1.0:
        r = replace(r, layer_decay=1.0)
    device = torch.device(device) if device is not None else module_device(encoder)
    y = np.asarray(labels)
    if len(y) == 0 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"adaptation needs labels in [0, {num_classes}); got {len(y)} labels")

    def make() -> Classifier:
        body = copy.deepcopy(encoder)
        return Classifier(add_lora(body, rank=lora_rank, alpha=lora_alpha) if method == "lora" else body, num_classes)

    model, fit = fit_tuned(make, images, y, r, seed=seed, device=device)
    info = {"method": method, "recipe": asdict(r), "seed": seed, **fit,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if method == "lora":
        info["lora"] = {"rank": lora_rank, "alpha": lora_alpha}
    return model, info


__all__ = ["adapt_classifier", "finetune", "fit_tuned"]
