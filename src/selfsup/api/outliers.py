"""Anomaly detection on tables and time series (``selfsup anomaly fit|score`` with a table or series
run): orchestration only; the detectors live in ``selfsup.evaluate.outliers``.

``outlier_fit`` keeps a bank of the training rows (or windows) and their embeddings; ``outlier_score``
scores a test set with every detector: the run's encoder (k-th-neighbour distance in its embedding
space, and a masked model's reconstruction error) beside ADBench's strongest unsupervised
baselines on the raw input, IsolationForest and the raw k-th-neighbour distance, all fitted on
the same bank. Nothing uses a label to fit. With labels (an ADBench ``y``, a table's target, the
anomaly windows of NAB / the UCR anomaly archive), AUROC and AUPRC records go into the run's
``metrics.json``.

Splits: a table or set of series that holds both parts is split as ADBench does (``split``
"train" to fit, "test" to score: stratified 70 / 30, seed 0, ``data.splits.holdout_split``); a
long series at its training border (the UCR anomaly file's, NAB's 15 % probation, else 70 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from selfsup import files, lock, runs
from selfsup.api.common import Log, say
from selfsup.data import open_source
from selfsup.data.inputs import as_inputs, rows, take
from selfsup.evaluate.records import format_table, merge_records, record

DETECTORS_FILE = "detectors.safetensors"  # the bank: training inputs and their embeddings (+ .json)
SPLIT_NOTE = {"train": "ADBench's split: fitted on the stratified 70 % (seed 0) without labels",
              "test": "ADBench's split: the stratified 30 % (seed 0) scored",
              "all": "every row or window"}


def is_structured(run: str | Path) -> bool:
    """Whether a run's encoder reads tables or series (its anomaly detection is this module's)."""
    from selfsup.methods import STRUCTURED

    return runs.load_encoder(run)[1].modality in STRUCTURED


@lock.writes
def outlier_fit(run: str | Path, data: str, *, out: str | Path | None = None, data_options: dict | None = None,
                max_samples: int | None = None, max_bank: int = 20_000, seed: int = 0, device: str = "auto",
                log: Log = say) -> Path:
    """Keep the training rows (or windows) of ``data`` and their embeddings as the detectors' bank.

    ``data`` is read with the run's schema and ``split`` "train" unless ``data_options`` say otherwise
    (``{"split": "all"}`` fits on every row). At most ``max_bank`` rows are kept (a random subset,
    ``seed``), which bounds the kNN cost. Writes ``RUN/anomaly/detectors.safetensors`` (or ``out``)
    and ``detectors.json`` beside it; returns the bank's path.
    """
    from selfsup.evaluate.features import extract_features

    encoder, spec, _ = runs.load_encoder(run, device=device)
    options = {"split": "train", **(data_options or {})}
    src = open_source(data, **spec.reader_options(), **options)
    x, _ = src.arrays(max_samples)
    x = as_inputs(x)
    n = rows(x)
    if n > max_bank:
        x = take(x, np.sort(np.random.default_rng(seed).choice(n, max_bank, replace=False)))
    emb = extract_features(encoder, x)
    home = runs.results_dir(run, log) if runs.is_reference(run) else Path(run)  # a shipped or public model: no run
    path = Path(out) if out else home / "anomaly" / DETECTORS_FILE
    path = path / DETECTORS_FILE if path.suffix != ".safetensors" else path
    lock.hold(path.parent)  # one writer per folder
    inputs = x if isinstance(x, dict) else {spec.input_key: x}
    with files.atomic_path(path) as tmp:
        save_file({"embeddings": emb.contiguous(), **{k: v.contiguous() for k, v in inputs.items()}}, str(tmp))
    info = {"run": runs.canonical(run), "data": str(data), "data_options": options, "modality": spec.modality,
            "n_available": n, "n_bank": rows(x), "seed": seed, "split": SPLIT_NOTE.get(options.get("split", ""), "")}
    files.write_json(path.with_suffix(".json"), info)
    log(f"anomaly bank of {rows(x)} of {n} training samples of {src.name} ({options['split']} part) saved to {path}")
    return path


def _anomaly_labels(labels: np.ndarray, class_names: list[str] | None) -> np.ndarray | None:
    """1 = anomaly: the class named "anomaly", else the rarer of two classes (ADBench's y = 1); None
    without two classes."""
    known = labels[labels >= 0]
    if class_names and "anomaly" in class_names:
        return (labels == class_names.index("anomaly")).astype(int)
    if len(np.unique(known)) != 2 or len(known) < len(labels):
        return None
    rare = int(np.argmin(np.bincount(known)))
    return (labels == rare).astype(int)


@lock.writes
def outlier_score(model: str | Path, data: str, *, data_options: dict | None = None, out: str | Path | None = None,
                  max_samples: int | None = None, k: int = 5, passes: int = 4, seed: int = 0, report: bool = True,
                  device: str = "auto", log: Log = say) -> list[dict]:
    """Score ``data`` with the bank saved by ``outlier_fit`` (its file or folder): every detector's
    scores to ``OUT/scores.csv`` (default the bank's folder); with labels, AUROC and AUPRC per
    (encoder, detector) into the run's ``metrics.json`` (returned). ``split`` defaults to "test"
    when ``data`` is the file the bank was fitted on, else "all". A long series also gets its
    scores over time, with the labelled anomalies shaded, in ``RUN/figures/anomaly_over_time.png``
    and the report."""
    from selfsup.evaluate.metrics import anomaly_metrics
    from selfsup.evaluate.outliers import detector_scores

    path = Path(model)
    path = path / DETECTORS_FILE if path.is_dir() else path
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        raise FileNotFoundError(f"no anomaly bank at {path} (with {meta.name} beside it); run `anomaly fit`")
    info = json.loads(meta.read_text())
    reference = runs.is_reference(info["run"])
    # where results go: a reference's results folder (the one holding reference.json), or the run
    run = path.parent.parent if reference else Path(info["run"])
    if reference and not (run / runs.REFERENCE).is_file():
        run = path.parent
    encoder, spec, _ = runs.load_encoder(info["run"], device=device)
    method = None if reference else runs.load_method(run, device=device)
    saved = load_file(str(path))
    bank_emb = saved.pop("embeddings")
    bank = saved if len(saved) > 1 else saved[spec.input_key]
    same = Path(str(data)).expanduser().resolve() == Path(info["data"]).expanduser().resolve()
    fit_split = info["data_options"].get("split", "train")
    options = {"split": "test" if same and fit_split == "train" else "all", **(data_options or {})}
    src = open_source(data, **spec.reader_options(), **options)
    keys: list[str] = []
    x, y = src.arrays(max_samples, keys=keys)
    scores = detector_scores(encoder, method, bank, x, bank_embeddings=bank_emb, k=k, passes=passes, seed=seed)
    out_dir = Path(out) if out else path.parent
    home = runs.owning_run(path.parent, run)  # the bank's run only when the bank lies inside it
    for folder in dict.fromkeys((out_dir, home)):
        lock.hold(folder)
    labels = _anomaly_labels(y, src.spec.class_names)
    files.write_csv(out_dir / "scores.csv", ["key", "label", *(f"{e}_{d}" for e, d in scores)],
                    ([key, "" if labels is None else int(labels[i]), *(f"{v[i]:.6g}" for v in scores.values())]
                     for i, key in enumerate(keys)))
    log(f"scored {len(keys)} samples of {src.name} ({options['split']} part); scores in {out_dir / 'scores.csv'}")
    if hasattr(src, "starts"):
        _over_time(home, src, scores, log)
    if labels is None:
        log("no anomaly labels in the data: scores only")
        return []
    recs = []
    for (enc, det), s in scores.items():
        how = {"passes": passes} if det == "reconstruction" else {"k": k} if det == "knn" else {"seed": seed}
        for metric, v in anomaly_metrics(labels, s).items():
            named = {"model": info["run"]} if reference and enc == "ssl" else {}
            recs.append(record(src.name, "anomaly", "foundation" if named else enc, metric, [v], detector=det,
                               n_train=info["n_bank"], **named,
                               n_test=len(labels), anomalies=int(labels.sum()), split=SPLIT_NOTE.get(options["split"]),
                               **how))
    merge_records(home / runs.METRICS, recs)
    log(format_table(recs))
    if report and not reference and home != run.resolve():
        log(f"report not written: the bank at {path.parent} is not inside its run {run}")
    elif report and not reference:
        from selfsup.api.evaluate import report as write_report

        write_report(run, log=log)
    return recs


def _over_time(run: Path, src, scores: dict, log: Log) -> None:
    """Window scores spread over the time steps, with the labelled anomalies: a figure for the report."""
    from selfsup.evaluate.outliers import window_to_points
    from selfsup.interpret.structured import plot_anomaly_over_time

    series = src.series
    length = len(series)
    points = {f"{e} {d}": window_to_points(np.asarray(s), src.starts, src.window, length)
              for (e, d), s in scores.items()}
    png = plot_anomaly_over_time(series.values[0], series.point_labels, points, border=src.start,
                                 title=f"{src.name}: anomaly scores over time")
    folder = run / runs.FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    files.write_bytes(folder / "anomaly_over_time.png", png)
    log(f"anomaly scores over time drawn to {folder / 'anomaly_over_time.png'}")


__all__ = ["DETECTORS_FILE", "is_structured", "outlier_fit", "outlier_score"]
