"""The ``selfsup`` command. Each sub-command is a thin shell over ``selfsup.api``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from selfsup.cli_anomaly import anomaly_app
from selfsup.cli_options import (
    MODEL_REF,
    SOURCE_HELP,
    TASK_HELP,
    DeviceOption,
    csv_list,
    data_options,
    emit,
    log_for,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Self-supervised pretraining and few-label evaluation, from raw data to a verdict.\n\n"
                  "Example: selfsup pretrain --method mae --data photos/ --budget 10m --out runs/mae; "
                  "selfsup evaluate runs/mae --data labelled/ --shots 1,5,10")
app.add_typer(anomaly_app, name="anomaly")




@app.command()
def pretrain(
    overrides: Annotated[list[str] | None, typer.Argument(help="config overrides, e.g. train.lr=1e-3")] = None,
    method: Annotated[str | None, typer.Option(
        help="objective: mae, simclr, dino (any data: images, tables, series, audio); clip, siglip (with "
        "captions); distill (images); scarf (tables); ts2vec (series)")] = None,
    data: Annotated[str | None, typer.Option(help="what to learn from (see `selfsup datasets`)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<method>-<time>)")] = None,
    budget: Annotated[str | None, typer.Option(
        help="time budget, e.g. 10m; sizes the schedule. Wall time by default; add the override train.clock=cpu "
        "to count this process's CPU time instead, so a busy machine gets the same work (use data.num_workers=0)")]
    = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
    epochs: Annotated[int | None, typer.Option(help="passes over the data")] = None,
    resume: Annotated[str | None, typer.Option(
        help="continue a run from its newest good checkpoint: --resume RUN, or --resume alone (= latest) to "
        "continue --out (started there if it holds no run yet)")] = None,
    init: Annotated[str | None, typer.Option(
        help="continue pretraining from these weights: " + MODEL_REF + "; the encoder (architecture, patch size, "
        "mean/std) comes from it, MAE takes its decoder and CLIP/SigLIP both towers and the tokenizer when it has "
        "them; defaults for continuing: train.lr=1e-4 train.warmup=0.1 train.layer_decay=0.75")] = None,
    teacher: Annotated[str | None, typer.Option(
        help="--method distill: the frozen teacher whose features the student learns (" + MODEL_REF + ")")] = None,
    device: DeviceOption = "auto",
    monitor: Annotated[str | None, typer.Option(
        help="regression guard: labelled data scored by kNN at step 0 and every train.monitor_every steps; keeps "
        "the best weights as encoder.safetensors and stops after train.monitor_patience checks in a row below "
        "the best. Use a small labelled set that is NOT the test set of a later evaluation")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
    target: Annotated[str | None, typer.Option(help="table: the label column")] = None,
    columns: Annotated[list[str] | None, typer.Option(help="table or long series: columns to use (comma list)")]
    = None,
    drop: Annotated[list[str] | None, typer.Option(help="table or long series: columns to leave out")] = None,
    split: Annotated[str | None, typer.Option(help="train|test|all: part of a file that holds both (tables: "
                                               "ADBench's 70/30; a long series: its border, default train)")] = None,
    window: Annotated[int | None, typer.Option(help="long series: steps per window (default 128)")] = None,
    stride: Annotated[int | None, typer.Option(help="long series: steps between windows (default 16)")] = None,
) -> None:
    """Pretrain an encoder with a self-supervised objective; writes a run folder.

    Example: selfsup pretrain --method mae --data photos/ --budget 10m --out runs/mae

    Continue it after a stop: the same command with --resume added (or: selfsup pretrain --resume runs/mae).

    Continue a public model on your data: selfsup pretrain --method dino --init hf:facebook/dinov2-small
    --data xrays/ --monitor labelled_val/ --budget 30m

    Tables and series: selfsup pretrain --method mae --data adult/adult.data --target class
    """
    from selfsup import api
    from selfsup.evaluate.records import load_records

    run = api.pretrain(data, method, config=config, overrides=overrides or [], out=out, budget=budget,
                       steps=steps, epochs=epochs, resume=resume, init=init, teacher=teacher, monitor=monitor,
                       log=log_for(as_json), data_options=data_options(target, columns, drop, split, window, stride),
                       device=device)
    emit(load_records(run / "metrics.json"), as_json)


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help=SOURCE_HELP + " (its records say encoder 'foundation')")],
    data: Annotated[str, typer.Option(help="labelled evaluation data (split into pool/test unless --train-data)")],
    protocol: Annotated[list[str] | None, typer.Option(
        help="knn, linear, finetune, lora, semi, hybrid (or comma list)")] = None,
    baselines: Annotated[str | None, typer.Option(
        help="encoders to compare against: raw (the raw input; knn, linear), scratch (the same network from "
        "random weights; finetune), gbdt (tables) and minirocket (series) (whole supervised models); each gets "
        "its own hyper-parameters chosen on the labels, as the SSL encoder does [default: raw,scratch, plus "
        "gbdt for a table, minirocket for series]")] = None,
    shots: Annotated[list[str] | None, typer.Option(help="labels per class, e.g. 1,5,10")] = None,
    label_fraction: Annotated[list[str] | None, typer.Option(help="fraction of the pool labelled, e.g. 0.01")] = None,
    seeds: Annotated[int, typer.Option(help="label draws for knn and linear (the verdict pairs them)")] = 5,
    finetune_seeds: Annotated[int, typer.Option(help="label draws for finetune and lora (the first of --seeds)")]
    = 3,
    train_data: Annotated[str | None, typer.Option(help="labelled pool to draw the few labels from")] = None,
    max_samples: Annotated[int | None, typer.Option(help="cap on samples read from each set")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
    curve: Annotated[bool, typer.Option(
        "--curve", help="label-efficiency curve: knn, linear, finetune, lora at 1,5,10,50 shots and 100% "
        "(unless given), plotted to RUN/figures/label_efficiency.png")] = False,
    foundation: Annotated[str | None, typer.Option(
        help="also measure this public model (" + MODEL_REF + ") under the same protocols and tuning, reading the "
        "images at its own image size: records with encoder 'foundation' and the verdict ssl vs foundation")] = None,
    device: DeviceOption = "auto",
    devices: Annotated[int, typer.Option(help="processes that extract the features (gloo on the CPU, one GPU "
                                         "each on CUDA); the same numbers as one")] = 1,
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "classify",
    image_size: Annotated[int | None, typer.Option(help="detect/segment: image side (default 192)")] = None,
    head: Annotated[str, typer.Option(help="segment: fpn (light decoder) or linear (1x1 on patch features)")]
    = "fpn",
    max_steps: Annotated[int | None, typer.Option(help="detect/segment: cap on training steps per model "
                                                  "(default 400; early stopping usually ends sooner)")] = None,
) -> None:
    """Few-label evaluation (kNN, linear probe, fine-tune) beside baselines given the same care, and the verdict.

    Example: selfsup evaluate runs/mae --data test/ --train-data train/ --shots 1,5,10
    (boxes: --task detect --data test.json --train-data train.json --label-fraction 0.1)
    """
    from selfsup import api
    from selfsup.evaluate.fewshot import DEFAULT_PROTOCOLS, FEW_LABEL_PROTOCOLS

    if task != "classify":
        from selfsup.api.dense import evaluate_dense
        from selfsup.dense.train import DenseRecipe

        records = evaluate_dense(
            run, data, task=task, train_data=train_data, protocols=csv_list(protocol) or ["linear", "finetune"],
            baselines=None if baselines is None else csv_list([baselines]) or [], shots=csv_list(shots, int),
            label_fractions=csv_list(label_fraction, float), seeds=min(seeds, finetune_seeds), image_size=image_size,
            head=head, foundation=foundation, max_samples=max_samples, device=device, log=log_for(as_json),
            recipe=None if max_steps is None else DenseRecipe(max_steps=max_steps))
        emit(records, as_json)
        return
    job = api.evaluate_curve if curve else api.evaluate
    records = job(
        run, data, protocols=csv_list(protocol) or list(FEW_LABEL_PROTOCOLS if curve else DEFAULT_PROTOCOLS),
        baselines=None if baselines is None else csv_list([baselines]) or [],
        shots=csv_list(shots, int), label_fractions=csv_list(label_fraction, float),
        seeds=seeds, finetune_seeds=finetune_seeds, train_data=train_data, max_samples=max_samples,
        foundation=foundation, device=device, devices=devices, log=log_for(as_json),
    )
    emit(records, as_json)


@app.command()
def adapt(
    run: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    data: Annotated[str, typer.Option(help="labelled data to draw the few labels from")],
    shots: Annotated[int | None, typer.Option(help="labels per class")] = None,
    label_fraction: Annotated[float | None, typer.Option(help="stratified fraction of the labels")] = None,
    protocol: Annotated[str, typer.Option(
        help="finetune (layer-wise lr decay) or lora (adapters); detect/segment: finetune or linear")] = "finetune",
    method: Annotated[str | None, typer.Option(hidden=True, help="deprecated spelling of --protocol")] = None,
    out: Annotated[Path | None, typer.Option(help="model folder (default RUN/classifiers/...; for a public model "
                                            "runs/<model>-<time>/classifiers/...)")] = None,
    seed: Annotated[int, typer.Option(help="draws the labels, the held-out part and the training order")] = 0,
    val_fraction: Annotated[float, typer.Option(help="part of the labels held out to choose the lr and length")]
    = 0.2,
    test_data: Annotated[str | None, typer.Option(help="labelled data the labels do not come from: a test score")]
    = None,
    max_steps: Annotated[int | None, typer.Option(help="safety cap on optimizer steps (default 5000)")] = None,
    lr: Annotated[float | None, typer.Option(help="centre of the lr grid (default 1e-3; lora 1e-2)")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (updates are scaled by alpha / rank)")] = 16,
    merge: Annotated[bool, typer.Option(help="fold LoRA adapters into the saved weights")] = True,
    max_samples: Annotated[int | None, typer.Option(help="cap on samples read")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "classify",
    head: Annotated[str, typer.Option(help="segment: fpn or linear")] = "fpn",
    image_size: Annotated[int | None, typer.Option(help="detect/segment: image side (default 192)")] = None,
) -> None:
    """Train a classifier (or detector / segmenter) from the run's encoder on few labels; saves a model folder.

    Example: selfsup adapt runs/mae --data train/ --shots 5 --protocol lora --out models/lora5 --test-data test/
    (boxes: --task detect --data train.json --label-fraction 0.1 --out models/det)
    """
    from dataclasses import replace

    from selfsup import api
    from selfsup.adapt import ADAPT_RECIPES
    from selfsup.evaluate.records import load_records

    if method is not None:  # --method means the pretraining objective everywhere else
        print("warning: `adapt --method` is deprecated and will be removed in the next release; use --protocol",
              file=sys.stderr, flush=True)
        protocol = method
    if task != "classify":
        from selfsup.api.dense import adapt_dense
        from selfsup.dense.train import DenseRecipe

        changes = {k: v for k, v in {"max_steps": max_steps, "lr": lr}.items() if v is not None}
        model_dir = adapt_dense(run, data, task=task, shots=shots, label_fraction=label_fraction,
                                recipe=DenseRecipe(**changes),
                                protocol=protocol, head=head, device=device,
                                image_size=image_size, seed=seed, test_data=test_data, max_samples=max_samples,
                                out=out, log=log_for(as_json))
        emit(load_records(model_dir / "metrics.json"), as_json)
        return
    if protocol not in ADAPT_RECIPES:
        raise ValueError(f"unknown --protocol {protocol!r}; choose from {', '.join(ADAPT_RECIPES)}")
    changes = {k: v for k, v in {"max_steps": max_steps, "lr": lr}.items() if v is not None}
    recipe = replace(ADAPT_RECIPES[protocol], **changes) if changes else None
    model_dir = api.adapt(run, data, shots=shots, label_fraction=label_fraction, protocol=protocol, out=out, seed=seed,
                          val_fraction=val_fraction, recipe=recipe, lora_rank=rank, lora_alpha=alpha, merge=merge,
                          max_samples=max_samples, test_data=test_data, device=device, log=log_for(as_json))
    emit(load_records(model_dir / "metrics.json"), as_json)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="model folder written by `selfsup adapt`")],
    data: Annotated[str, typer.Option(help="what to classify (labels not needed)")],
    out: Annotated[Path, typer.Option(help="CSV: key, pred, pred_name, prob_<class> per class")] = Path("preds.csv"),
    max_samples: Annotated[int | None, typer.Option(help="stop after this many samples")] = None,
    batch_size: Annotated[int, typer.Option(help="samples per forward pass")] = 256,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print a summary as JSON last")] = False,
) -> None:
    """Classify every readable sample of --data with a saved classifier; writes a CSV.

    Example: selfsup predict models/lora5 --data new_images/ --out preds.csv
    """
    from selfsup import api

    if (Path(model) / "dense.json").is_file():  # a detector or segmenter (selfsup adapt --task detect|segment)
        from selfsup.api.dense import predict_dense

        summary = predict_dense(model, data, None if out == Path("preds.csv") else out, max_samples=max_samples,
                                log=log_for(as_json))
    else:
        summary = api.predict(model, data, out, max_samples=max_samples, batch_size=batch_size, device=device,
                              log=log_for(as_json))
    if as_json:
        from selfsup.files import json_text

        print(json_text(summary, indent=None), end="", flush=True)


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/demo-<time>)")] = None,
    steps: Annotated[int, typer.Option(help="pretraining steps: fixed work, so the answer is the same on an idle "
                                       "or a busy machine (about 2 minutes on 2 idle CPU cores)")] = 1300,
    budget: Annotated[str | None, typer.Option(
        help="a pretraining time budget instead of --steps (wall time: the result then depends on the machine's "
        "load)")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
) -> None:
    """The whole story on the built-in digits set: MAE pretraining, few-label evaluation, report.

    Example: selfsup demo --out runs/demo
    """
    from selfsup import api

    records = api.demo(out=out, steps=steps, budget=budget, device=device, log=log_for(as_json))
    emit(records, as_json)


@app.command("zero-shot")
def zero_shot(
    run: Annotated[str, typer.Argument(help="clip or siglip run folder, or a public CLIP / SigLIP (hf:, open_clip:)")],
    data: Annotated[str, typer.Option(help="labelled images or audio")],
    classes: Annotated[list[str] | None, typer.Option(help="class names in label order (comma list)")] = None,
    template: Annotated[list[str] | None, typer.Option(help="prompt template(s) with {} for the name")] = None,
    max_samples: Annotated[int | None, typer.Option(help="cap on samples read")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
) -> None:
    """Zero-shot classification from class names with prompt templates.

    Example: selfsup zero-shot runs/clip-fsdd --data 'fsdd/test-*.tar.gz' --classes zero,one,two,three
    """
    from selfsup import api

    recs = api.zero_shot(run, data, csv_list(classes), templates=template, max_samples=max_samples, device=device,
                         log=log_for(as_json))
    emit(recs, as_json)


@app.command()
def retrieve(
    run: Annotated[str, typer.Argument(help="clip or siglip run folder, or a public CLIP / SigLIP (hf:, open_clip:)")],
    data: Annotated[str, typer.Option(help="images (or audio) with captions")],
    max_samples: Annotated[int | None, typer.Option(help="cap on samples read")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
) -> None:
    """Cross-modal retrieval: recall@1/5/10 both directions.

    Example: selfsup retrieve runs/clip --data flickr8k/test-000000.tar.gz
    """
    from selfsup import api

    emit(api.retrieve(run, data, max_samples=max_samples, device=device, log=log_for(as_json)), as_json)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    data: Annotated[str | None, typer.Option(help="samples for the figures (default: the run's data; "
                                             "required for a model reference)")] = None,
) -> None:
    """Write RUN/report.html: results, curves, reconstructions, attention and embedding maps.

    Example: selfsup report runs/mae --data test/
    """
    from selfsup import api

    api.report(run, data=data)


@app.command()
def embed(
    run: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    data: Annotated[str, typer.Option(help="what to embed")],
    out: Annotated[Path, typer.Option(help="output file: .npz or .safetensors")],
    max_samples: Annotated[int | None, typer.Option(help="stop after this many samples")] = None,
    device: DeviceOption = "auto",
    devices: Annotated[int, typer.Option(help="processes that share the work (gloo on the CPU, one GPU each on "
                                         "CUDA); the rows come out in the data's order, as with one")] = 1,
) -> None:
    """Encode every sample of --data with the encoder (a run's or a public model's) and save the features.

    Example: selfsup embed runs/mae --data images/ --out features.npz   (or: selfsup embed hf:facebook/dinov2-small ...)
    """
    from selfsup import api

    api.embed(run, data, out, max_samples=max_samples, device=device, devices=devices)


@app.command()
def export(
    run: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    format: Annotated[str, typer.Option("--format", help="safetensors, onnx, hf or timm")] = "safetensors",
    out: Annotated[Path | None, typer.Option(help="output file or folder (default RUN/export/...; for a public "
                                            "model runs/<model>-<time>/export/...)")] = None,
    device: Annotated[str, typer.Option(help="where the ONNX check's torch side runs: auto, cpu, cuda, cuda:N, "
                                        "mps")] = "auto",
) -> None:
    """Export the encoder: safetensors (timm names), ONNX, a Hugging Face ViTModel folder, or timm.

    Example: selfsup export runs/mae --format timm   (then in Python:
    timm.create_model("local-dir:runs/mae/export/timm", pretrained=True))
    """
    from selfsup import api

    api.export(run, format, out, device=device)


@app.command()
def datasets() -> None:
    """What --data accepts, and the built-in data sets.

    Example: selfsup datasets
    """
    from selfsup.data import describe_sources

    print(describe_sources())


@app.command()
def forecast(
    run: Annotated[str, typer.Argument(help="series " + SOURCE_HELP)],
    data: Annotated[str, typer.Option(help="a long series: CSV with a time column (e.g. ETTh1.csv)")],
    horizon: Annotated[list[str] | None, typer.Option(help="steps ahead (comma list)")] = None,
    lookback: Annotated[int, typer.Option(help="steps the forecast sees")] = 336,
    protocol: Annotated[list[str] | None, typer.Option(help="linear (closed-form heads), finetune")] = None,
    steps: Annotated[int, typer.Option(
        "--max-steps", "--steps", help="finetune: at most this many Adam steps, for ssl and scratch alike "
                                       "(each stops when its validation MSE stops improving)")] = 5000,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics records as JSON last")] = False,
) -> None:
    """Long-horizon forecasting: a linear head on the frozen encoder vs a DLinear-style linear model, and the
    fine-tuned encoder vs the same network from scratch; MSE / MAE on the standard split (ETT: 12/4/4 months).

    Example: selfsup forecast runs/mae-etth1 --data ETTh1.csv --horizon 96,336 --lookback 336
    """
    from selfsup import api

    records = api.forecast(run, data, horizons=csv_list(horizon, int) or [96, 336], lookback=lookback,
                           protocols=csv_list(protocol) or ["linear", "finetune"], steps=steps, device=device,
                           log=log_for(as_json))
    emit(records, as_json)


def resume_alone(argv: list[str]) -> list[str]:
    """``--resume`` given without a value (last, or before another option or a ``key=value``
    override) becomes ``--resume latest``: continue the ``--out`` folder, as open_clip users write."""
    out = list(argv)
    for i, arg in enumerate(out):
        nxt = out[i + 1] if i + 1 < len(out) else None
        if arg == "--resume" and (nxt is None or nxt.startswith("-") or ("=" in nxt and not Path(nxt).is_dir())):
            out.insert(i + 1, "latest")
            break
    return out


def main() -> None:
    from selfsup.train.heap import keep_freed_memory  # no torch: `selfsup --help` imports nothing heavy

    keep_freed_memory()  # this process's own setting: about 2 % faster CPU training steps (train/heap.py)

    try:
        app(args=resume_alone(sys.argv[1:]), prog_name="selfsup")
    except (ValueError, OSError, KeyError, RuntimeError, MemoryError) as e:  # config.ConfigError is a ValueError
        if os.environ.get("SELFSUP_DEBUG") or (
            isinstance(e, RuntimeError) and type(e).__name__ != "NonFiniteLossError"
        ):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, MemoryError):
            msg = f"out of memory ({msg})"
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except BaseException as e:  # noqa: BLE001 - Lightning's SIGTERMException: the checkpoint is saved
        if type(e).__name__ != "SIGTERMException":
            raise
        print("stopped by SIGTERM; the step reached is checkpointed: continue with the same command and --resume",
              file=sys.stderr)
        sys.exit(143)


if __name__ == "__main__":
    main()
