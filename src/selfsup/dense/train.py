"""Training a detector or segmenter on few labelled images, its lr and length chosen on held-out ones.

As ``adapt.tune`` does for classifiers, the same for every encoder (SSL, scratch, a public model):
1. hold out ``val_fraction`` of the labelled images (seeded; at least one),
2. per learning rate of the grid (``lr * m``), train until the held-out score (mAP@.5 for boxes, mIoU
   for masks) has not improved for ``patience`` checks (one every ``eval_every`` steps, at most
   ``max_steps``),
3. keep the lr with the best held-out score and the step count at which it was best,
4. train the final model on all the labelled images with that lr for that many steps.

Protocols: "linear" freezes the encoder (its maps are computed once and cached; only the neck and head
train), "finetune" trains everything, the encoder at ``encoder_lr_scale`` times the head's lr.
Augmentation: horizontal flips (boxes and masks flipped with the image).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.dense import IGNORE, DenseSet
from selfsup.data.spec import to_float
from selfsup.dense.boxes import centernet_loss, centernet_targets, decode
from selfsup.dense.heads import CenterNet, Segmenter
from selfsup.dense.metrics import box_map, seg_metrics

PROTOCOLS = ("linear", "finetune")


@dataclass(frozen=True)
class DenseRecipe:
    lr: float = 1e-3
    lr_grid: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    encoder_lr_scale: float = 0.1
    batch_size: int = 16
    weight_decay: float = 1e-4
    eval_every: int = 25
    patience: int = 3
    max_steps: int = 400
    val_fraction: float = 0.2
    flip: bool = True


def _flip(x: torch.Tensor, boxes: list[np.ndarray] | None, masks: torch.Tensor | None, g: torch.Generator):
    S = x.shape[-1]
    f = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(f[:, None, None, None], x.flip(-1), x)
    if masks is not None:
        masks = torch.where(f[:, None, None], masks.flip(-1), masks)
    if boxes is not None:
        boxes = [np.stack([S - b[:, 2], b[:, 1], S - b[:, 0], b[:, 3]], 1) if fi and len(b) else b
                 for b, fi in zip(boxes, f.tolist(), strict=True)]
    return x, boxes, masks


def _features(model: nn.Module, images: torch.Tensor, batch: int = 32) -> list[list[torch.Tensor]]:
    """A frozen encoder's maps per image batch, computed once (eval mode, no gradients)."""
    enc = model.pyramid.encoder
    enc.eval()
    with torch.no_grad():
        return [model.pyramid.backbone(to_float(images[i:i + batch])) for i in range(0, len(images), batch)]


def predict(model: nn.Module, images: torch.Tensor, batch: int = 16):
    """uint8 images (N, C, S, S) -> detections (list of dicts, ``boxes.decode``) or class maps (N, S, S)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_float(images[i:i + batch])
            if isinstance(model, CenterNet):
                outs.extend(decode(*model(x), model.stride, x.shape[-1]))
            else:
                outs.append(model(x).argmax(1))
    return outs if isinstance(model, CenterNet) else torch.cat(outs)


def score(model: nn.Module, ds: DenseSet) -> dict:
    """Held-out or test scores of ``model`` on ``ds``: box_map or seg_metrics, plus "main" (map50 / miou)."""
    p = predict(model, ds.images)
    if isinstance(model, CenterNet):
        m = box_map(ds, p)
        return {**m, "main": m["map50"]}
    m = seg_metrics(ds, p)
    return {**m, "main": m["miou"]}


def _loss(model: nn.Module, feats, x: torch.Tensor, ds: DenseSet, idx: list[int], boxes, masks) -> torch.Tensor:
    if isinstance(model, CenterNet):
        heat, size, off = model.head(feats) if feats is not None else model(x)
        t = centernet_targets(boxes, [ds.labels[i] for i in idx], model.num_classes, tuple(heat.shape[-2:]),
                              model.stride)
        return centernet_loss(heat, size, off, t)
    logits = model.head(feats, tuple(x.shape[-2:])) if feats is not None else model(x)
    return F.cross_entropy(logits, masks, ignore_index=IGNORE)


def train_dense(model: nn.Module, ds: DenseSet, recipe: DenseRecipe, protocol: str, g: torch.Generator, *,
                val: DenseSet | None = None, steps: int | None = None) -> dict:
    """Train ``model`` in place on ``ds``; with ``val`` stop early and restore the best weights.

    Returns {"best_step", "val_score", "steps", "stopped"}."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"dense protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    enc = model.pyramid.encoder
    frozen = protocol == "linear"
    head_params = [p for n, p in model.named_parameters() if not n.startswith("pyramid.encoder.")]
    groups = [{"params": head_params, "lr": recipe.lr}]
    if frozen:
        for p in enc.parameters():
            p.requires_grad_(False)
    else:
        groups.append({"params": list(enc.parameters()), "lr": recipe.lr * recipe.encoder_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    total = steps or recipe.max_steps
    base = [gr["lr"] for gr in groups]
    n = len(ds)
    best, best_step, best_state, since = -1.0, 0, None, 0
    stopped = "cap" if steps is None else "steps"
    flip_all = frozen and recipe.flip  # cached maps: flip the features' inputs once, both versions kept
    cache = _features(model, ds.images) if frozen else None
    cache_f = _features(model, ds.images.flip(-1)) if flip_all else None
    bs = min(recipe.batch_size, n)
    perm, pos = torch.randperm(n, generator=g), 0
    for step in range(1, total + 1):
        model.train()
        if frozen:
            enc.eval()
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + bs].tolist()
        pos += bs
        x = to_float(ds.images[idx])
        boxes = None if ds.boxes is None else [ds.boxes[i] for i in idx]
        masks = None if ds.masks is None else ds.masks[idx]
        feats = None
        if frozen:
            flips = (torch.rand(len(idx), generator=g) < 0.5).tolist() if flip_all else [False] * len(idx)
            per = [[(cache_f if fl else cache)[i // 32][lv][i % 32] for lv in range(len(cache[0]))]
                   for i, fl in zip(idx, flips, strict=True)]
            feats = [torch.stack([p[lv] for p in per]) for lv in range(len(per[0]))]
            S = x.shape[-1]
            if boxes is not None:
                boxes = [np.stack([S - b[:, 2], b[:, 1], S - b[:, 0], b[:, 3]], 1) if fl and len(b) else b
                         for b, fl in zip(boxes, flips, strict=True)]
            if masks is not None:
                masks = torch.stack([m.flip(-1) if fl else m for m, fl in zip(masks, flips, strict=True)])
        elif recipe.flip:
            x, boxes, masks = _flip(x, boxes, masks, g)
        warm = min(1.0, step / 20)
        for gr, b in zip(opt.param_groups, base, strict=True):
            gr["lr"] = b * warm
        loss = _loss(model, feats, x, ds, idx, boxes, masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if not torch.isfinite(loss):
            stopped = "nonfinite"
            break
        if val is not None and (step % recipe.eval_every == 0 or step == total):
            s = score(model, val)["main"]
            if s > best:
                best, best_step, since = s, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since += 1
                if since >= recipe.patience:
                    stopped = "patience"
                    break
    if frozen:
        for p in enc.parameters():
            p.requires_grad_(True)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"best_step": best_step or total, "val_score": best if val is not None else None, "steps": step,
            "stopped": stopped}


def make_model(task: str, encoder: nn.Module, num_classes: int, head: str = "fpn", width: int = 96) -> nn.Module:
    """A fresh detector (``task`` "detect") or segmenter ("segment", ``head`` linear | fpn) on ``encoder``;
    ``width`` the channels of the neck and head."""
    if task == "detect":
        return CenterNet(encoder, num_classes, width)
    if task == "segment":
        return Segmenter(encoder, num_classes, head, width)
    raise ValueError(f"dense task must be detect or segment, not {task!r}")


def fit_dense(build: Callable[[], nn.Module], ds: DenseSet, recipe: DenseRecipe, protocol: str, seed: int,
              log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """Choose lr and length on held-out images of ``ds``, then train on all of it (module docstring).

    ``build()`` returns a fresh model (called under a fixed seed, so every candidate starts alike).
    Returns the final model (eval mode) and what was chosen."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))
    n_val = max(1, round(recipe.val_fraction * len(ds))) if len(ds) > 1 else 0

    def run(r: DenseRecipe, part: DenseSet, val: DenseSet | None, steps: int | None):
        torch.manual_seed(seed)
        model = build()
        fit = train_dense(model, part, r, protocol, torch.Generator().manual_seed(seed), val=val, steps=steps)
        return model, fit

    if n_val == 0:
        model, fit = run(recipe, ds, None, recipe.max_steps // 4)
        return model, {"lr": recipe.lr, "steps": fit["steps"], "selection": "none (one labelled image)", "grid": []}
    val, part = ds.subset(order[:n_val]), ds.subset(order[n_val:])
    grid = []
    for m in recipe.lr_grid:
        r = replace(recipe, lr=recipe.lr * m)
        t0 = time.perf_counter()
        _, fit = run(r, part, val, None)
        grid.append({"lr": r.lr, "val_score": fit["val_score"], "best_step": fit["best_step"],
                     "stopped": fit["stopped"], "seconds": round(time.perf_counter() - t0, 1)})
        if log:
            log(f"  lr {r.lr:.2g}: held-out {fit['val_score']:.3f} at step {fit['best_step']} ({fit['stopped']})")
    best = max(grid, key=lambda c: c["val_score"])
    steps = max(recipe.eval_every, round(best["best_step"] * len(ds) / max(1, len(part))))
    t0 = time.perf_counter()
    model, _ = run(replace(recipe, lr=best["lr"]), ds, None, steps)
    return model, {"lr": best["lr"], "steps": steps, "val_score": best["val_score"], "n_val": n_val,
                   "n_train": len(part), "selection": f"lr and length chosen on {n_val} held-out images, then "
                   "re-trained on all", "seconds": round(time.perf_counter() - t0, 1), "grid": grid}


__all__ = ["PROTOCOLS", "DenseRecipe", "fit_dense", "make_model", "predict", "score", "train_dense"]
