"""Measuring an encoder: few-label evaluation and the label-efficiency curve, zero-shot
classification, cross-modal retrieval, embeddings to a file, and the report. Orchestration only."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from selfsup import distributed, files, lock, runs
from selfsup.adapt.finetune import FinetuneRecipe
from selfsup.api.common import Log, say
from selfsup.data import open_source
from selfsup.data.inputs import take
from selfsup.data.sources import SkipCounter
from selfsup.data.spec import MODALITIES, captions_of
from selfsup.data.splits import check_disjoint, first_occurrences, stratified_split
from selfsup.encoders import AtSize, build_encoder
from selfsup.evaluate.baselines import SUPERVISED, default_supervised, supervised_baselines
from selfsup.evaluate.fewshot import (
    DEFAULT_BASELINES,
    DEFAULT_FINETUNE_SEEDS,
    DEFAULT_PROTOCOLS,
    DEFAULT_SEEDS,
    FEW_LABEL_PROTOCOLS,
    evaluate_few_label,
    plan,
)
from selfsup.evaluate.records import format_table, merge_records
from selfsup.evaluate.verdict import format_verdicts, verdicts
from selfsup.hardware import resolve_device


@lock.writes
def evaluate(
    run: str | Path,
    data: str,
    *,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    baselines: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: int = DEFAULT_SEEDS,
    finetune_seeds: int = DEFAULT_FINETUNE_SEEDS,
    train_data: str | None = None,
    test_fraction: float = 0.5,
    max_samples: int | None = None,
    recipe: FinetuneRecipe | None = None,
    foundation: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    devices: int = 1,
    log: Log = say,
) -> list[dict]:
    """Few-label evaluation of a run's encoder beside the ``baselines``, with the verdict.

    Labels for training come from ``train_data`` when given (refused if it shares a sample with
    ``data``: ``data.splits.check_disjoint``); otherwise ``data`` is split (stratified, fixed
    seed, identical images kept once) into a labelled pool and a held-out test part; when the run
    was pretrained on the training part of this very file (``split=train``), the pool is that part
    and the test is the rest, which the encoder never saw (``data.splits.holdout_split``). Tables and
    series are read with the run's saved schema (training statistics). ``baselines`` default to
    raw and scratch, plus the data's strong supervised model (``evaluate.baselines``: gbdt for a
    table, minirocket for series). Records, and one verdict record per comparison
    (``evaluate.verdict``), are merged into the run's ``metrics.json`` and returned.

    ``foundation``: a public model (or another run) measured beside the run under the same
    protocols, draws and tuning, reading the same images resized to its own image size
    (``encoders.AtSize``); its records say ``"encoder": "foundation"`` and name it in ``model``, and
    the verdict compares the run with it. ``run`` may itself be a public model: its records then say
    "foundation" and go to ``out`` (default ``runs/<model>-<time>/``, ``runs.results_dir``).

    ``device`` (``hardware.resolve_device``; "auto" = the accelerator when present): where the encoders
    (SSL, scratch, foundation) run, for feature extraction and fine-tuning alike; ``devices`` > 1
    extracts image features with that many processes (``evaluate.spread``), the same numbers as one.
    """
    primary = "foundation" if runs.is_reference(run) else "ssl"
    if primary == "foundation" and foundation is not None:
        raise ValueError(f"{run} is itself a public model (its records say 'foundation'); give a run folder "
                         "to compare with --foundation")
    encoder, spec, enc_cfg = runs.load_encoder(run, device=device)
    out_dir = Path(out) if out is not None else runs.results_dir(run, log)
    lock.hold(out_dir)  # one writer per run folder
    if baselines is None:
        baselines = [*DEFAULT_BASELINES, *default_supervised(spec.modality)]
    found = None
    if foundation is not None:
        found, fspec, _ = runs.load_encoder(foundation, device=device)
        if fspec.image_size != spec.image_size:
            log(f"foundation {foundation} reads the evaluation images resized from {spec.image_size} to its "
                f"{fspec.image_size} px")
            found = AtSize(found, fspec.image_size)
        baselines = (*[b for b in baselines if b != "foundation"], "foundation")
    if shots is None and label_fractions is None:
        shots = [1, 5, 10]
    supervised = supervised_baselines([b for b in baselines if b in SUPERVISED], spec.modality)
    baselines = [b for b in baselines if b not in SUPERVISED]
    dedupe = MODALITIES[spec.modality].dedupe  # identical images are a leak; identical table rows are not
    parts = _pretrained_part(run, data) if train_data is None else None
    if parts is not None:
        log(f"{data}: the run was pretrained on its training part; labels are drawn there, the test is the rest")
        train_data = data
    test_src = open_source(data, **spec.reader_options(), **(parts or {}).get("test", {}))
    test_keys: list[str] = []
    test_skips = SkipCounter()
    x_test, y_test = test_src.arrays(max_samples, keys=test_keys, skips=test_skips)
    if test_skips.total:
        log(f"{test_src.name}: {test_skips.summary()}")
    if train_data is not None:
        pool_src = open_source(train_data, **spec.reader_options(), **(parts or {}).get("train", {}))
        pool_keys: list[str] = []
        pool_skips = SkipCounter()
        x_pool, y_pool = pool_src.arrays(max_samples, keys=pool_keys, skips=pool_skips)
        if pool_skips.total:
            log(f"{pool_src.name}: {pool_skips.summary()}")
        check_disjoint(x_pool, [pool_src.sample_id(k) for k in pool_keys], x_test,
                       [test_src.sample_id(k) for k in test_keys], train_data, data, content=dedupe)
    else:
        unique = first_occurrences(x_test) if dedupe else np.arange(len(y_test))
        if len(unique) < len(y_test):
            log(f"{data}: {len(y_test) - len(unique)} images are identical to earlier ones and are left out, so "
                "no image is in both the labelled pool and the test part")
        pool, test = stratified_split(y_test[unique], test_fraction, seed=0)
        pool, test = unique[pool], unique[test]
        x_pool, y_pool, x_test, y_test = take(x_test, pool), y_test[pool], take(x_test, test), y_test[test]
    if (y_test < 0).any() or (y_pool < 0).any():
        raise ValueError(f"{data}: few-label evaluation needs labels (class subfolders, .cls members or labels key)")
    num_classes = int(max(y_pool.max(), y_test.max()) + 1)
    _check_classes(y_pool, y_test, num_classes, test_src.spec.class_names, data)
    planned = plan(protocols, baselines, scratch=True, foundation=found is not None,
                   supervised=[b.name for b in supervised])
    names = list(dict.fromkeys(enc for _, enc in planned if enc != "ssl"))  # the baselines these protocols run
    if (weights := _weights_file(run)) is not None:
        log(f"scoring {weights} (not {runs.ENCODER}): its records say weights={weights!r} and are kept beside "
            "the run's own")
    log(f"evaluating {runs.source_name(run)} on {test_src.name}: {len(y_pool)} labelled pool, {len(y_test)} test, "
        f"{num_classes} classes, protocols {', '.join(protocols)}, baselines {', '.join(names) or 'none'}")

    def scratch() -> nn.Module:
        return build_encoder(enc_cfg, spec)

    recs = evaluate_few_label(
        encoder=encoder, make_scratch_encoder=scratch, train_images=x_pool, train_labels=y_pool,
        test_images=x_test, test_labels=y_test, num_classes=num_classes, protocols=tuple(protocols),
        baselines=tuple(baselines), supervised=supervised, shots=list(shots) if shots else None,
        label_fractions=list(label_fractions) if label_fractions else None, seeds=tuple(range(seeds)),
        finetune_seeds=finetune_seeds, task=test_src.name, recipe=recipe, feature_cache_dir=out_dir / runs.CACHE,
        foundation=found, progress=log, devices=devices,
    )
    for r in recs:
        if primary == "foundation" and r["encoder"] == "ssl":
            r.update(encoder="foundation", model=runs.canonical(run))
        elif r["encoder"] == "foundation":
            r["model"] = runs.canonical(foundation)
    judged = verdicts(recs, encoder=primary)
    if (weights := _weights_file(run)) is not None:
        for r in recs + judged:
            r["weights"] = weights
    merge_records(out_dir / runs.METRICS, recs + judged)
    log(format_table(recs))
    if judged:
        log("verdict (paired over the same label draws):\n" + format_verdicts(judged))
    return recs + judged


def _weights_file(run: str | Path) -> str | None:
    """The file name when ``run`` is an encoder file other than the run's ``encoder.safetensors`` (say
    ``encoder-last.safetensors``): records carry it, so they do not replace the run's own."""
    path = Path(run)
    return path.name if path.is_file() and not runs.is_reference(run) and path.name != runs.ENCODER else None


def _check_classes(y_pool: np.ndarray, y_test: np.ndarray, num_classes: int, names: Sequence[str] | None,
                   data: str) -> None:
    """Refuse (one line) a task with fewer than 2 classes, or a labelled pool where a class has no sample:
    a score over one class is 1.0 whatever the encoder, and a missing class can never be predicted."""
    names = list(names or [])
    name = lambda c: repr(names[c]) if c < len(names) else str(c)  # noqa: E731
    present = np.unique(np.concatenate([y_pool, y_test]))
    if max(len(present), len(names)) < 2:
        raise ValueError(f"{data}: few-label evaluation needs at least 2 classes; found only class "
                         f"{', '.join(name(int(c)) for c in present)}")
    missing = [c for c in range(max(num_classes, len(names))) if not (y_pool == c).any()]
    if missing:
        raise ValueError(f"{data}: the labelled pool has no sample of class {', '.join(name(c) for c in missing)} "
                         f"({len(y_pool)} labelled samples, {max(num_classes, len(names))} classes); give every class "
                         "at least one labelled sample")


def _pretrained_part(run: Path, data: str) -> dict | None:
    """{"train": {"split": "train"}, "test": {"split": "test"}} when ``run`` pretrained on the training
    part of the file ``data`` (a table or set of series read with ``split=train``); else None."""
    try:
        cfg = runs.load_run_config(run).data
    except (OSError, ValueError):
        return None
    same = Path(cfg.path).expanduser().resolve() == Path(str(data)).expanduser().resolve()
    return {"train": {"split": "train"}, "test": {"split": "test"}} if same and cfg.split == "train" else None


@lock.writes
def report(run: str | Path, data: str | None = None, *, max_images: int = 500, log: Log = say) -> Path:
    """Write ``RUN/report.html``: results, curves, reconstructions, attention and embedding maps.

    ``run`` may also be a model reference (``hf:``, ``timm:``, ``selfsup:series-small``...): the report of
    its embedding (and, for a ViT, attention) maps on ``data`` goes to its results folder."""
    from selfsup.interpret.report import build_report

    encoder = spec = None
    if runs.is_reference(run):  # a public or shipped model: its embedding and attention maps on `data`
        if data is None:
            raise ValueError(f"{run} is a model reference, not a run: give --data for the report's figures")
        method = None
        encoder, spec, _ = runs.load_encoder(run)
        run = runs.results_dir(run, log)
    else:
        run = Path(run)
        method = runs.load_method(run)
    lock.hold(run)
    images = labels = class_names = None
    if data is None:
        data = runs.load_run_config(run).data.path
    try:
        src = _source_for(method, data) if method is not None else open_source(data, **spec.reader_options())
        images, labels = src.arrays(max_images)
        class_names = src.spec.class_names
        if labels is not None and (labels < 0).all():
            labels = None
    except (ValueError, FileNotFoundError, TypeError) as e:
        log(f"report without sample images: {e}")
    path = build_report(run, method=method, encoder=encoder, spec=spec, images=images, labels=labels,
                        class_names=class_names)
    log(f"report written to {path}")
    return path


def embed(run: str | Path, data: str, out: str | Path, *, max_samples: int | None = None,
          batch_size: int = 256, device: str = "auto", devices: int = 1, log: Log = say) -> Path:
    """Pooled encoder features of every sample in ``data``, saved with keys and labels, in the data's order.

    ``.npz`` gets arrays ``features`` (N, F), ``labels`` (N,), ``keys`` (N,); ``.safetensors`` the
    same tensors (keys in the metadata). Samples are read and encoded batch by batch
    (``evaluate.spread.embed_source``) on ``device``; ``devices`` > 1 encodes with that many local
    processes (gloo on the CPU, one GPU each on CUDA), and under torchrun / srun every launched
    process takes its share; the rows equal one process's up to float rounding.
    """
    from selfsup.evaluate.spread import spawn_local

    if devices < 1:
        raise ValueError(f"--devices must be at least 1, not {devices}")
    if distributed.launched_world_size() > 1:  # torchrun / srun: this process is one rank of many
        got = _embed_launched(run, data, batch_size, max_samples, device, log)
    elif devices > 1:
        log(f"embedding with {devices} processes")
        got = spawn_local(_embed_job, devices, str(run), data, batch_size, max_samples,
                          device=str(resolve_device(device)))
    else:
        got = _embed_job(device, run, data, batch_size, max_samples, log)
    f, y, keys = got["features"], got["labels"], got["keys"]
    skips = SkipCounter()
    skips.add(got.get("skipped", []))
    if not len(f):
        raise ValueError(f"{data}: no readable samples to embed ({skips.summary()})")
    if not distributed.is_global_zero():
        return Path(out)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        with files.atomic_path(out) as tmp:
            save_file({"features": f.contiguous(), "labels": y.contiguous()}, str(tmp),
                      metadata={"keys": json.dumps(keys)})
    else:
        with files.atomic_open(out if out.suffix == ".npz" else out.with_name(out.name + ".npz"), "wb") as fh:
            np.savez(fh, features=f.numpy(), labels=y.numpy(), keys=np.array(keys))
    log(f"wrote {len(f)} embeddings of width {f.shape[1]} to {out}" + (f"; {skips.summary()}" if skips.total else ""))
    return out


def _embed_job(device: str, run: str | Path, data: str, batch_size: int, max_samples: int | None,
               log: Log | None = None) -> dict:
    """One process's part of ``embed`` (all of it without a process group): {"features", "labels", "keys"}."""
    from selfsup.evaluate.spread import embed_source

    encoder, spec, _ = runs.load_encoder(run, device=device)
    src = open_source(data, **spec.reader_options())
    return embed_source(encoder, src, spec.batch_input, batch_size=batch_size, max_samples=max_samples, log=log)


def _embed_launched(run: str | Path, data: str, batch_size: int, max_samples: int | None, device: str,
                    log: Log) -> dict:
    """``embed`` as one rank of processes started by torchrun / srun (``init_method=env://``)."""
    import torch.distributed as dist

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", init_method="env://",
                                rank=distributed.global_rank(), world_size=distributed.launched_world_size())
    return _embed_job(str(resolved), run, data, batch_size, max_samples, log if distributed.is_global_zero() else None)


def _collect(src: Any, max_samples: int | None) -> dict[str, list]:
    """Readable samples of a source as lists: inputs (images or waveforms), labels, captions."""
    inputs, labels, captions = [], [], []
    for s in src.dataset(shuffle=False):
        if s is None or "__skip__" in s:
            continue
        inputs.append(s[src.spec.input_key])
        labels.append(int(s.get("label", -1)))
        captions.append(captions_of(s))
        if max_samples is not None and len(inputs) >= max_samples:
            break
    if not inputs:
        raise ValueError(f"{src.name}: no readable samples")
    if all(x.shape == inputs[0].shape for x in inputs):  # images; waveforms of any length stay a list
        inputs = torch.stack(inputs)
    return {"inputs": inputs, "labels": labels, "captions": captions}


def _tagged(recs: list[dict], source: str | Path) -> list[dict]:
    """Records measured on a public model say so: ``"encoder": "foundation"`` and the ``model`` reference."""
    if runs.is_reference(source):
        for r in recs:
            r.update(encoder="foundation", model=runs.canonical(source))
    return recs


def _source_for(method: nn.Module, data: str) -> Any:
    spec = getattr(method, "spec", None)
    return open_source(data, **(spec.reader_options() if spec is not None else {}))


@lock.writes
def zero_shot(run: str | Path, data: str, classes: Sequence[str] | None = None, *,
              templates: Sequence[str] | None = None, max_samples: int | None = None, device: str = "auto",
              log: Log = say) -> list[dict]:
    """Zero-shot classification with a CLIP/SigLIP run: class names -> prompts -> nearest text."""
    from selfsup.evaluate.zeroshot import zero_shot as _zero_shot

    method = runs.load_method(run, device=device)
    if not hasattr(method, "encode_text"):
        raise ValueError(f"{run}: zero-shot needs an image-text or audio-text method (clip, siglip)")
    src = _source_for(method, data)
    names = list(classes) if classes else src.spec.class_names
    if not names:
        raise ValueError(f"{data}: give the class names with --classes (in label order)")
    got = _collect(src, max_samples)
    recs = _zero_shot(method, got["inputs"], got["labels"], names, templates, task=src.name)
    out = runs.results_dir(run, log)
    lock.hold(out)
    merge_records(out / runs.METRICS, _tagged(recs, run))
    log(format_table(recs))
    return recs


@lock.writes
def retrieve(run: str | Path, data: str, *, max_samples: int | None = None, device: str = "auto",
             log: Log = say) -> list[dict]:
    """Image<->text (or audio<->text) recall@1/5/10 on a caption set, several captions per item allowed."""
    from selfsup.evaluate.retrieval import retrieval

    method = runs.load_method(run, device=device)
    if not hasattr(method, "encode_text"):
        raise ValueError(f"{run}: retrieval needs an image-text or audio-text method (clip, siglip)")
    src = _source_for(method, data)
    got = _collect(src, max_samples)
    keep = [i for i, c in enumerate(got["captions"]) if c]
    if not keep:
        raise ValueError(f"{data}: no captions found (.json with 'captions' or 'text')")
    inputs = got["inputs"][keep] if isinstance(got["inputs"], torch.Tensor) else [got["inputs"][i] for i in keep]
    recs = retrieval(method, inputs, [got["captions"][i] for i in keep], task=src.name)
    out = runs.results_dir(run, log)
    lock.hold(out)
    merge_records(out / runs.METRICS, _tagged(recs, run))
    log(format_table(recs))
    return recs


CURVE_SHOTS, CURVE_FRACTIONS = (1, 5, 10, 50), (1.0,)


@lock.writes
def evaluate_curve(
    run: str | Path,
    data: str,
    *,
    protocols: Sequence[str] = FEW_LABEL_PROTOCOLS,
    shots: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    baselines: Sequence[str] | None = None,
    seeds: int = DEFAULT_SEEDS,
    finetune_seeds: int = DEFAULT_FINETUNE_SEEDS,
    train_data: str | None = None,
    test_fraction: float = 0.5,
    max_samples: int | None = None,
    recipe: FinetuneRecipe | None = None,
    foundation: str | Path | None = None,
    device: str = "auto",
    devices: int = 1,
    log: Log = say,
) -> list[dict]:
    """The label-efficiency curve: ``evaluate`` at several budgets, plotted to ``RUN/figures``.

    Default budgets: 1, 5, 10, 50 labels per class and 100% of the pool; every protocol beside the
    raw-input and from-scratch baselines (and a table's or series' supervised one), ``seeds`` draws
    each. Accuracy (and AUROC for two classes) vs labels with error bars (std over seeds) goes to
    ``RUN/figures/label_efficiency.png``.
    """
    from selfsup.interpret.figures import plot_label_efficiency

    if shots is None and label_fractions is None:
        shots, label_fractions = CURVE_SHOTS, CURVE_FRACTIONS
    if seeds < 3:
        log(f"warning: {seeds} seed(s); error bars need at least 3")
    out = runs.results_dir(run, log)
    lock.hold(out)
    recs = evaluate(run, data, protocols=protocols, baselines=baselines, shots=shots, label_fractions=label_fractions,
                    seeds=seeds, finetune_seeds=finetune_seeds, train_data=train_data, test_fraction=test_fraction,
                    max_samples=max_samples, recipe=recipe, foundation=foundation, out=out, device=device,
                    devices=devices, log=log)
    png = plot_label_efficiency(recs)
    if png is None:
        log("no curve drawn: it needs at least two budgets of one kind (shots or fractions)")
        return recs
    path = out / runs.FIGURES / "label_efficiency.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_bytes(path, png)
    log(f"label-efficiency curve written to {path}")
    return recs


