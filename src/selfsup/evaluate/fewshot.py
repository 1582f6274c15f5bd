"""The few-label protocol: what an encoder is worth with K labels per class or a fraction of them,
beside baselines given the same care, and the verdict.

For each label budget and seed a labelled subset is drawn from the pool (``data.splits``); every
encoder gets the same draws, so their scores pair up for the verdict (``evaluate.verdict``).

- ``knn`` and ``linear`` run on frozen features (extracted once per image); k and the
  regularisation are chosen per encoder on the labels only (``knn.choose_knn``,
  ``linear.choose_c``).
- ``semi`` propagates the draw's labels over the kNN graph of the whole unlabelled pool
  (``evaluate.semi``; the test set is classified inductively), and ``hybrid`` is the linear probe on
  the encoder's features concatenated with the raw input (the raw input alone is its baseline);
  both run for every encoder alike, and ``semi`` also on MiniRocket's features when that baseline runs.
- ``finetune`` and ``lora`` train a copy with the learning rate and length chosen on held-out
  labels (``adapt.tune.fit_tuned``): no encoder is stopped at a fixed step count.

Encoders: "ssl" (the run's) and the baselines asked for: "raw" (the raw input under the frozen
protocols: pixels, a table's numbers with missing flags and one-hot categories, series values;
``features.raw_pair``), "scratch" (the same network from random weights, under fine-tuning),
"foundation" (a frozen public model, under every protocol), and the strong supervised models of
tables and series (``evaluate.baselines``: "gbdt", "minirocket"), each a whole classifier trained
on the draw's labels, recorded under the protocol "supervised". The test split is only ever scored.

Inputs are any modality's (``data.inputs``): uint8 images, series (N, C, T), a table's dict.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.adapt.finetune import Classifier, FinetuneRecipe, epoch_steps, lora_recipe, train_classifier
from selfsup.adapt.tune import finetune
from selfsup.data.inputs import as_inputs, rows, take, to_device
from selfsup.data.splits import sample_few
from selfsup.encoders.inference import module_device
from selfsup.evaluate.features import cached_features, raw_pair
from selfsup.evaluate.knn import knn_probe
from selfsup.evaluate.linear import linear_classifier
from selfsup.evaluate.metrics import scores_metrics
from selfsup.evaluate.records import record
from selfsup.evaluate.semi import semi_probe

# What `selfsup evaluate` runs unless told; LoRA (adapters on the attention projections,
# ``selfsup.adapt.lora``) needs peft, so it runs when asked (and in the label-efficiency curve).
DEFAULT_PROTOCOLS = ("knn", "linear", "finetune")
FEW_LABEL_PROTOCOLS = (*DEFAULT_PROTOCOLS, "lora")
FROZEN = ("knn", "linear")
POOL_PROTOCOLS = ("semi", "hybrid")  # on frozen features too, asked for by name (evaluate.semi; raw concatenated)
PROTOCOL_NAMES = (*FEW_LABEL_PROTOCOLS, *POOL_PROTOCOLS)
FEATURES = (*FROZEN, *POOL_PROTOCOLS)  # the protocols that run on extracted features
MINIROCKET_FEATURES = "minirocket-features"  # the MiniRocket baseline's features under semi
BASELINES = ("raw", "scratch", "foundation")  # and the supervised ones of evaluate.baselines
SUPERVISED = "supervised"  # the protocol of whole supervised models (gbdt, minirocket)
EVERY_SEED = (*FEATURES, SUPERVISED)  # cheap enough to run on every draw; fine-tuning runs on the first few
CHOSEN = ("k", "standardize", "C", "pool", "lr", "steps", "epochs", "alpha", "seconds", "tuning_seconds",
          *("min_samples_leaf", "max_leaf_nodes", "learning_rate", "max_iter"))
DEFAULT_BASELINES = ("raw", "scratch")
DEFAULT_SEEDS, DEFAULT_FINETUNE_SEEDS = 5, 3  # frozen probes are cheap, fine-tuning is not


def plan(protocols: Sequence[str], baselines: Sequence[str], *, scratch: bool,
         foundation: bool, supervised: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(protocol, encoder) pairs to run: ssl under every protocol, each baseline where it applies, and
    each ``supervised`` baseline (by name) under "supervised"."""
    unknown = set(protocols) - set(PROTOCOL_NAMES)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOL_NAMES)}")
    bad = set(baselines) - set(BASELINES)
    if bad:
        raise ValueError(f"unknown baseline(s) {sorted(bad)}; choose from {', '.join(BASELINES)}")
    runs = []
    for p in PROTOCOL_NAMES:
        if p not in protocols:
            continue
        runs.append((p, "ssl"))
        if p in FEATURES and "raw" in baselines:
            runs.append((p, "raw"))
        if p == "semi" and "minirocket" in supervised:
            runs.append((p, MINIROCKET_FEATURES))
        if p == "finetune" and "scratch" in baselines and scratch:
            runs.append((p, "scratch"))
        if "foundation" in baselines and foundation:
            runs.append((p, "foundation"))
    return runs + [(SUPERVISED, name) for name in supervised]


def hybrid_pair(feats: dict[str, tuple[torch.Tensor, torch.Tensor]], enc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``hybrid`` protocol's (pool, test) features: ``enc``'s concatenated with the raw input's (raw alone
    for "raw", the baseline)."""
    if enc == "raw":
        return feats["raw"]
    raw = feats["raw"]
    return tuple(torch.cat([f.float().cpu(), r.float().cpu()], dim=1) for f, r in zip(feats[enc], raw, strict=True))


def _summary(chosen: dict) -> str:
    keys = ("k", "standardize", "C", "lr", "epochs", "alpha", "min_samples_leaf", "max_leaf_nodes", "learning_rate")
    return ", ".join(f"{k} {chosen[k]:.3g}" if isinstance(chosen[k], float) else f"{k} {chosen[k]}"
                     for k in keys if k in chosen)


def step_seconds(encoder: nn.Module, images, num_classes: int, recipe: FinetuneRecipe,
                 device: torch.device, steps: int = 3) -> float:
    """Seconds per fine-tuning step of ``encoder``, measured on a few steps (after one warm-up step)."""
    model = Classifier(copy.deepcopy(encoder), num_classes).to(device)
    x = to_device(take(images, slice(0, recipe.batch_size)), device)
    y = torch.zeros(rows(x), dtype=torch.long, device=device)
    with torch.random.fork_rng(devices=[]):
        train_classifier(model, x, y, recipe, generator=torch.Generator(), steps=1)
        t0 = time.perf_counter()
        train_classifier(model, x, y, recipe, generator=torch.Generator(), steps=steps)
    return (time.perf_counter() - t0) / steps


def expected_steps(n_labels: int, recipe: FinetuneRecipe) -> float:
    """A rough guess of one fine-tuning's steps (all lr candidates and the re-training), for the plan:
    each candidate runs for about ``patience`` + 5 validation periods."""
    period = max(5, math.ceil(epoch_steps(max(1, round(n_labels * (1 - recipe.val_fraction))), recipe.batch_size)))
    return (len(recipe.lr_grid) + 1) * (recipe.patience + 5) * period


def budget_labels(labels: np.ndarray, kind: str, amount: float) -> int:
    """How many labels a budget draws from ``labels`` (``data.splits.sample_few``'s rule)."""
    counts = np.bincount(labels[labels >= 0])
    counts = counts[counts > 0]
    if kind == "shots":
        return int(np.minimum(counts, int(amount)).sum())
    return int(np.maximum(1, np.round(amount * counts)).sum())


WHOLE_POOL = {"semi"}  # protocols that read the features of every pool sample, labelled or not


def drawn_rows(labels: np.ndarray, budgets: Sequence[tuple[str, float]], seeds: Sequence[int]) -> np.ndarray:
    """The sorted pool rows that some draw of ``budgets`` x ``seeds`` labels (``data.splits.sample_few``)."""
    drawn = [sample_few(labels, seed=seed, **{"shots" if kind == "shots" else "fraction": amount})
             for kind, amount in budgets for seed in seeds]
    return np.unique(np.concatenate(drawn)).astype(np.int64) if drawn else np.empty(0, np.int64)


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
    baselines: Sequence[str] = DEFAULT_BASELINES,
    foundation: nn.Module | None = None,
    supervised: Sequence = (),
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: Sequence[int] = tuple(range(DEFAULT_SEEDS)),
    finetune_seeds: int = DEFAULT_FINETUNE_SEEDS,
    recipe: FinetuneRecipe | None = None,
    feature_cache_dir: str | Path | None = None,
    raw_max_side: int | None = 64,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
    devices: int = 1,
) -> list[dict]:
    """Records (see ``records.record``) for every budget x protocol x encoder x metric.

    train_images / test_images uint8 (N, C, H, W) / (M, C, H, W), or any modality's inputs
    (``data.inputs``: series (N, C, T), a table's dict); labels (N,) / (M,) ints in
    [0, num_classes) (train labels < 0 are never drawn). ``baselines`` among "raw", "scratch"
    (``make_scratch_encoder()``, seeded per draw) and "foundation" (the ``foundation`` encoder,
    frozen); ``supervised``: baseline objects of ``evaluate.baselines`` (prepared on the pool and
    test inputs once, then trained on every draw). Frozen protocols and the supervised baselines
    run over every seed of ``seeds``; fine-tuning and LoRA over the first ``finetune_seeds`` of
    them. Metrics: "top1" (ties give no free credit: ``metrics.expected_top1``), plus "auroc" for 2
    classes and "auprc" of the rarer class when it is rare. Each record carries per draw what was
    chosen for that encoder (``chosen``) and how (``selection``). Features of the pretrained
    encoders are cached in ``feature_cache_dir``; raw pixels are area-averaged to at most
    ``raw_max_side``. ``progress`` gets the plan and its cost estimate first, then one line per run.
    ``devices`` > 1 extracts image features with that many processes (``evaluate.spread``).
    """
    runs = plan(protocols, baselines, scratch=make_scratch_encoder is not None, foundation=foundation is not None,
                supervised=[b.name for b in supervised])
    by_name = {b.name: b for b in supervised}
    budgets = [("shots", int(k)) for k in shots or ()] + [("label_fraction", float(f)) for f in label_fractions or ()]
    if not budgets:
        raise ValueError("give shots and/or label_fractions")
    train_images, test_images = as_inputs(train_images), as_inputs(test_images)
    train_labels, test_labels = np.asarray(train_labels).astype(np.int64), np.asarray(test_labels).astype(np.int64)
    if test_labels.min(initial=0) < 0 or test_labels.max(initial=0) >= num_classes:
        raise ValueError(f"test labels must lie in [0, {num_classes})")
    if train_labels.max(initial=0) >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes}) (or be < 0 for unknown)")
    log = progress or (lambda msg: None)
    device = torch.device(device) if device is not None else module_device(encoder)
    r = recipe or FinetuneRecipe()
    recipes = {"finetune": r, "lora": lora_recipe(r)}
    models = {"ssl": encoder, "foundation": foundation}
    trained = [(p, e) for p, e in runs if p not in EVERY_SEED]
    ft_seeds = list(seeds)[:max(1, finetune_seeds)]

    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    frozen_encs = {e for p, e in runs if p in FEATURES} - {MINIROCKET_FEATURES}
    if frozen_encs:
        # only the pool rows some draw labels are encoded, unless a protocol reads the whole pool (semi)
        used = None if WHOLE_POOL & set(protocols) else drawn_rows(train_labels, budgets, seeds)
        n_pool = rows(train_images) if used is None else len(used)
        log(f"{task}: extracting features of {n_pool} pool + {rows(test_images)} test samples"
            + (f" (the {n_pool} of {rows(train_images)} pool samples the draws label)" if used is not None else ""))
        for name in frozen_encs - {"raw"}:
            pool = cached_features(models[name], train_images if used is None else take(train_images, used),
                                   feature_cache_dir, device=device, progress=log, devices=devices)
            if used is not None:  # back to pool rows, so a draw's indices work unchanged; undrawn rows stay 0
                pool, part = pool.new_zeros((rows(train_images), *pool.shape[1:])), pool
                pool[torch.from_numpy(used)] = part
            feats[name] = (pool, cached_features(models[name], test_images, feature_cache_dir, device=device,
                                                 progress=log, devices=devices))
        if "raw" in frozen_encs or "hybrid" in protocols:
            feats["raw"] = raw_pair(train_images, test_images, raw_max_side)
    for b in supervised:
        log(f"{task}: preparing the {b.name} baseline on {rows(train_images)} + {rows(test_images)} samples")
        b.prepare(train_images, test_images)
        if b.name == "minirocket" and any(e == MINIROCKET_FEATURES for _, e in runs):
            feats[MINIROCKET_FEATURES] = (torch.from_numpy(b.pool).float(), torch.from_numpy(b.test).float())

    jobs = [(kind, amount, seed, p, e) for kind, amount in budgets for seed in seeds for p, e in runs
            if p in EVERY_SEED or seed in ft_seeds]
    n_train = sum(1 for j in jobs if j[3] not in EVERY_SEED)
    lines = [f"{task}: {len(budgets)} budget(s) x {len(seeds)} draws for {', '.join(sorted(frozen_encs)) or '-'} "
             f"under {', '.join(p for p in FEATURES if p in protocols) or '-'}"]
    if trained:
        per_step = step_seconds(encoder, train_images, num_classes, r, device)
        guess = per_step * len(ft_seeds) * len(trained) * sum(
            expected_steps(budget_labels(train_labels, kind, amount), r) for kind, amount in budgets)
        lines.append(f"{task}: {n_train} fine-tunings ({', '.join(f'{p}/{e}' for p, e in trained)}; "
                     f"{len(ft_seeds)} draws each), each choosing its lr from {len(r.lr_grid)} on held-out labels "
                     f"and trained until it stops improving: {per_step * 1e3:.0f} ms per step, very roughly "
                     f"{guess / 60:.0f} min")
    for line in lines:
        log(line)

    records = []
    t0, done = time.monotonic(), 0
    for kind, amount in budgets:
        values: dict[tuple[str, str, str], list[float]] = {}
        chosen: dict[tuple[str, str], list[dict]] = {}
        n_labels = []
        for seed in seeds:
            idx = sample_few(train_labels, seed=seed, **{"shots" if kind == "shots" else "fraction": amount})
            n_labels.append(len(idx))
            y = train_labels[idx]
            for protocol, enc in runs:
                if protocol not in EVERY_SEED and seed not in ft_seeds:
                    continue
                if protocol == SUPERVISED:
                    probs, info = by_name[enc].predict(idx, y, num_classes, seed)
                elif protocol == "knn":
                    probs, info = knn_probe(feats[enc][0][idx], y, feats[enc][1], num_classes)
                elif protocol == "linear":
                    probs, info = linear_classifier(feats[enc][0][idx], y, feats[enc][1], num_classes, seed)
                elif protocol == "semi":
                    probs, info = semi_probe(feats[enc][0], idx, y, feats[enc][1], num_classes, seed)
                elif protocol == "hybrid":
                    pool, test = hybrid_pair(feats, enc)
                    probs, info = linear_classifier(pool[idx], y, test, num_classes, seed)
                else:
                    model = models.get(enc)
                    if enc == "scratch":
                        with torch.random.fork_rng(devices=[]):
                            torch.manual_seed(seed)
                            model = make_scratch_encoder().to(device)
                    probs, info = finetune(model, take(train_images, idx), y, test_images, num_classes, seed=seed,
                                           recipe=recipes[protocol], lora=protocol == "lora", device=device)
                    info = {k: v for k, v in info.items() if k != "grid"} | {
                        "tuning_seconds": sum(c["seconds"] for c in info["grid"])}
                    done += 1
                for metric, v in scores_metrics(probs, test_labels, num_classes).items():
                    values.setdefault((protocol, enc, metric), []).append(v)
                chosen.setdefault((protocol, enc), []).append(info)
                if protocol not in FEATURES or enc == "ssl":
                    left = (time.monotonic() - t0) / done * (n_train - done) if done else 0.0
                    bar = f"[{'#' * round(20 * done / n_train):<20}] {done}/{n_train} " if n_train else ""
                    log(f"{bar}{task} {kind}={amount:g} seed {seed}: {protocol}/{enc} "
                        f"top1 {values[(protocol, enc, 'top1')][-1]:.4f} ({_summary(info)})"
                        + (f"; ~{left / 60:.1f} min left" if protocol not in EVERY_SEED and done < n_train else ""))
        for (protocol, enc, metric), vals in values.items():
            info = chosen[(protocol, enc)]
            records.append(record(
                task, protocol, enc, metric, vals, **{kind: amount}, n_labels=int(np.mean(n_labels)),
                n_test=len(test_labels), selection=sorted({c["selection"] for c in info}),
                chosen=[{k: v for k, v in c.items() if k in CHOSEN} for c in info],
                **({"hit_cap": True} if any(c.get("hit_cap") for c in info) else {}),
            ))
    return records


__all__ = [
    "BASELINES", "DEFAULT_BASELINES", "SUPERVISED", "DEFAULT_FINETUNE_SEEDS", "DEFAULT_PROTOCOLS", "DEFAULT_SEEDS",
    "FEW_LABEL_PROTOCOLS", "POOL_PROTOCOLS", "PROTOCOL_NAMES", "budget_labels", "evaluate_few_label", "plan",
]
