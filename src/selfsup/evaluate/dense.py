"""Few-label dense evaluation: detectors and segmenters on each encoder, the same draws and tuning for all.

For each label budget and seed a subset of the labelled pool is drawn (``data.dense.draw_labels``:
``shots`` images per class or a stratified fraction); for each protocol ("linear": frozen encoder,
neck and head trained; "finetune": everything) each encoder gets a fresh model tuned by
``dense.train.fit_dense`` (lr and length on held-out images of the draw) and is scored on the test set.
Encoders: the run's ("ssl", or "foundation" when the run is a public model), "scratch" (the same network
from random weights; fine-tuning only: a frozen random encoder says nothing) and "foundation" (a public
model given as well). Records: ``map`` and ``map50`` (boxes) or ``miou`` and ``dice`` (masks) per
(protocol, encoder, budget) over the seeds, with per-class scores of each draw in ``per_class``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
from torch import nn

from selfsup.data.dense import DenseSet, draw_labels
from selfsup.dense.train import DenseRecipe, fit_dense, make_model, score
from selfsup.evaluate.records import record

METRICS = {"detect": ("map50", "map"), "segment": ("miou", "dice")}
DEFAULT_FRACTION = {"detect": 0.1, "segment": 0.25}


def evaluate_dense_protocols(
    task: str,
    name: str,
    encoders: dict[str, Callable[[], nn.Module]],
    pool: DenseSet,
    test: DenseSet,
    *,
    protocols: tuple[str, ...] = ("linear", "finetune"),
    shots: list[int] | None = None,
    label_fractions: list[float] | None = None,
    seeds: int = 3,
    recipe: DenseRecipe | None = None,
    head: str = "fpn",
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Records of every (protocol, encoder, budget); ``encoders`` maps an encoder name to a function
    returning a fresh copy of it (weights as given: pretrained, or random for "scratch")."""
    recipe = recipe or DenseRecipe()
    log = progress or (lambda s: None)
    budgets = [("shots", s) for s in shots or []] + [("label_fraction", f) for f in label_fractions or []]
    if not budgets:
        budgets = [("label_fraction", DEFAULT_FRACTION[task])]
    out = []
    for kind, amount in budgets:
        results: dict[tuple[str, str], list[dict]] = {}
        for seed in range(seeds):
            idx = draw_labels(pool, **{"shots" if kind == "shots" else "fraction": amount}, seed=seed)
            labelled = pool.subset(idx)
            for protocol in protocols:
                for enc, make in encoders.items():
                    if enc == "scratch" and protocol != "finetune":
                        continue
                    t0 = time.perf_counter()
                    model, info = fit_dense(lambda make=make: make_model(task, make(), pool.num_classes, head),
                                            labelled, recipe, protocol, seed)
                    s = score(model, test)
                    s.update(info=info, n_labels=len(idx), seconds=time.perf_counter() - t0)
                    results.setdefault((protocol, enc), []).append(s)
                    log(f"{name} {kind}={amount:g} seed {seed}: {protocol}/{enc} {len(idx)} images, "
                        f"{METRICS[task][0]} {s[METRICS[task][0]]:.4f} (lr {info['lr']:.2g}, {info['steps']} steps, "
                        f"{s['seconds']:.0f} s)")
        for (protocol, enc), runs_ in results.items():
            for metric in METRICS[task]:
                out.append(record(
                    name, protocol, enc, metric, [r[metric] for r in runs_], **{kind: amount},
                    n_labels=int(np.mean([r["n_labels"] for r in runs_])), dense_task=task, head=head if
                    task == "segment" else "centernet", per_class=[r["per_class"] for r in runs_],
                    chosen=[{k: r["info"].get(k) for k in ("lr", "steps", "val_score")} for r in runs_],
                    seconds=[round(r["seconds"], 1) for r in runs_]))
    return out


def copier(encoder: nn.Module) -> Callable[[], nn.Module]:
    """A function returning a fresh deep copy of ``encoder`` each call."""
    return lambda: copy.deepcopy(encoder)


__all__ = ["DEFAULT_FRACTION", "METRICS", "copier", "evaluate_dense_protocols"]
