"""Quick sanity numbers for the issue-13 building blocks on ../shared/data (a few minutes on 2 CPU
cores; not the benchmark the issue asks for, which needs the API/CLI wiring and 10-minute runs).

    PYTHONPATH=src python benchmarks/issue13_sanity.py tables      # Adult, credit card, ADBench baselines
    PYTHONPATH=src python benchmarks/issue13_sanity.py tables-ssl  # TableMAE / SCARF probes, SSL anomaly scores
    PYTHONPATH=src python benchmarks/issue13_sanity.py ucr         # MiniRocket vs raw 1-NN on the 5 UCR sets
    PYTHONPATH=src python benchmarks/issue13_sanity.py ucr-ssl     # SeriesMAE / TS2Vec probes on 4 UCR sets
    PYTHONPATH=src python benchmarks/issue13_sanity.py ett         # ETTh1 linear baseline, SSL linear probing

SELFSUP_SHARED_DATA points at the data when it is not ../shared/data (e.g. from a git worktree).
One torch thread: on a shared 2-core machine two threads made these small models 60x slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _passive_omp  # noqa: F401  (before torch)
import numpy as np
import torch

from selfsup.data.series import SeriesSource, WindowSource, read_long_series, read_series
from selfsup.data.tabular import Table, TableSource, read_table
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.baselines import (
    gradient_boosting_scores,
    logistic_regression_scores,
    minirocket_baseline_scores,
    nearest_neighbour_scores,
)
from selfsup.evaluate.fewshot import sample_few, split_pool_test
from selfsup.evaluate.forecast import (
    PatchForecaster,
    fit_linear_forecaster,
    forecast_borders,
    forecast_errors,
    forecast_windows,
    predict,
    standardize,
    train_forecaster,
)
from selfsup.evaluate.knn import knn_predict
from selfsup.evaluate.linear import linear_probe
from selfsup.evaluate.metrics import accuracy, anomaly_metrics, classification_metrics
from selfsup.evaluate.outliers import (
    adbench_split,
    embedding_knn_scores,
    isolation_forest_scores,
    knn_distance_scores,
    reconstruction_scores,
)
from selfsup.evaluate.structured import series_features, table_features
from selfsup.methods import build_method

DATA = Path(os.environ.get("SELFSUP_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
UCR = {"ECG200": "tsv", "GunPoint": "ts", "PhalangesOutlinesCorrect": "tsv", "RefrigerationDevices": "tsv",
       "UWaveGestureLibrary": "ts"}
ADBENCH = ["44_Wilt", "12_fault", "22_magic.gamma", "30_satellite", "35_SpamBase", "15_Hepatitis", "40_vowels",
           "41_Waveform"]


def pretrain(method, src, seconds: float, batch_size: int, lr: float = 1e-3):
    """A plain AdamW loop for ``seconds`` (the engine adds budget, checkpoints, logs; not needed here)."""
    opt = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=0.05)
    if hasattr(method, "prepare"):
        method.prepare(src)
    t0, hist = time.time(), []
    method.train()
    for batch in src.loader(batch_size, shuffle=True, drop_last=len(src) > batch_size, infinite=True):
        loss = method(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(loss.item())
        if time.time() - t0 > seconds:
            break
    print(f"  {type(method).__name__}: {len(hist)} steps in {time.time() - t0:.0f}s, "
          f"loss {np.mean(hist[:10]):.3f} -> {np.mean(hist[-20:]):.3f}", flush=True)
    return method.eval()


def tables(_: float) -> None:
    tr = read_table(DATA / "tabular/adult/adult.data")
    te = read_table(DATA / "tabular/adult/adult.test", schema=tr.schema)
    for frac in (0.01, 1.0):
        idx = sample_few(tr.labels, fraction=frac, seed=0) if frac < 1 else np.arange(len(tr))
        for name, f in (("logreg", logistic_regression_scores), ("gbdt", gradient_boosting_scores)):
            s = f((tr.features[idx], tr.categories[idx]), tr.labels[idx], (te.features, te.categories),
                  tr.schema.cardinalities, 2)
            m = classification_metrics(te.labels, s)
            print(f"adult {frac:g} labels {name}: top1 {m['top1']:.4f} auroc {m['auroc']:.4f}", flush=True)
    cc = read_table(DATA / "creditcard/creditcard_sample.csv", target="Class")
    pool, test = split_pool_test(cc.labels, 0.5, seed=0)
    for frac in (0.01, 0.1):
        idx = pool[sample_few(cc.labels[pool], fraction=frac, seed=0)]
        for name, f in (("logreg", logistic_regression_scores), ("gbdt", gradient_boosting_scores)):
            s = f((cc.features[idx], cc.categories[idx]), cc.labels[idx],
                  (cc.features[test], cc.categories[test]), [], 2)
            m = classification_metrics(cc.labels[test], s)
            print(f"creditcard {frac:g} labels ({len(idx)} rows) {name}: auprc {m['auprc']:.4f}", flush=True)
    for name in ADBENCH:
        y = read_table(DATA / f"tabular/adbench/{name}.npz").labels
        fit, score = adbench_split(y, seed=0)
        t = read_table(DATA / f"tabular/adbench/{name}.npz", fit_rows=fit)
        x = t.features
        iso = anomaly_metrics(y[score], isolation_forest_scores(x[fit], x[score]))["auroc"]
        knn = anomaly_metrics(y[score], knn_distance_scores(x[fit], x[score], k=5))["auroc"]
        print(f"adbench {name}: IsolationForest auroc {iso:.4f}, kNN auroc {knn:.4f}", flush=True)


def tables_ssl(seconds: float) -> None:
    enc = EncoderConfig(size="custom", width=64, depth=3, heads=4)
    dec = {"decoder_width": 64, "decoder_depth": 1, "decoder_heads": 4}
    tr = read_table(DATA / "tabular/adult/adult.data")
    te = read_table(DATA / "tabular/adult/adult.test", schema=tr.schema)
    src = TableSource(tr)
    for name, opts in (("mae", dec), ("scarf", {}), ("random init", dec)):
        torch.manual_seed(0)
        m = build_method("mae" if name == "random init" else name, opts, enc, src.spec)
        m = m.eval() if name == "random init" else pretrain(m, src, seconds, 256)
        ftr, fte = table_features(m.encoder, tr.features, tr.categories), table_features(m.encoder, te.features,
                                                                                           te.categories)
        for frac in (0.01, 1.0):
            idx = sample_few(tr.labels, fraction=frac, seed=0) if frac < 1 else np.arange(len(tr))
            m_ = classification_metrics(te.labels, linear_probe(ftr[idx], torch.from_numpy(tr.labels[idx]), fte, 2))
            print(f"adult {name} linear probe {frac:g} labels: top1 {m_['top1']:.4f} auroc {m_['auroc']:.4f}",
                  flush=True)
    for name in ("40_vowels", "22_magic.gamma"):
        y = read_table(DATA / f"tabular/adbench/{name}.npz").labels
        fit, score = adbench_split(y, seed=0)
        t = read_table(DATA / f"tabular/adbench/{name}.npz", fit_rows=fit)
        sub = TableSource(Table(t.features[fit], t.categories[fit], np.full(len(fit), -1), [t.keys[i] for i in fit],
                                t.schema, name))
        torch.manual_seed(0)
        m = pretrain(build_method("mae", dec, enc, sub.spec), sub, seconds / 2, 256)
        rec = reconstruction_scores(m, {"features": t.features[score], "categories": t.categories[score]})
        emb = embedding_knn_scores(table_features(m.encoder, t.features[fit], t.categories[fit]),
                                   table_features(m.encoder, t.features[score], t.categories[score]))
        iso = isolation_forest_scores(t.features[fit], t.features[score])
        print(f"adbench {name} auroc: SSL reconstruction {anomaly_metrics(y[score], rec)['auroc']:.4f}, "
              f"SSL embedding kNN {anomaly_metrics(y[score], emb)['auroc']:.4f}, "
              f"IsolationForest {anomaly_metrics(y[score], iso)['auroc']:.4f}", flush=True)


def ucr_split(name: str):
    ext = UCR[name]
    return (read_series(DATA / f"timeseries/ucr/{name}/{name}_TRAIN.{ext}"),
            read_series(DATA / f"timeseries/ucr/{name}/{name}_TEST.{ext}"))


def ucr(_: float) -> None:
    for name in UCR:
        tr, te = ucr_split(name)
        k = len(tr.class_names)
        t0 = time.time()
        mr = accuracy(te.labels, minirocket_baseline_scores(tr.values, tr.labels, te.values, k))
        t1 = time.time()
        nn1 = accuracy(te.labels, nearest_neighbour_scores(tr.values, tr.labels, te.values, k))
        print(f"{name}: MiniRocket {mr:.3f} ({t1 - t0:.1f}s), 1-NN Euclidean {nn1:.3f} (full train labels)",
              flush=True)


def ucr_ssl(seconds: float) -> None:
    enc = EncoderConfig(size="custom", width=64, depth=3, heads=4, series_patch=8)
    for name in ("GunPoint", "ECG200", "UWaveGestureLibrary", "PhalangesOutlinesCorrect"):
        tr, te = ucr_split(name)
        src, k = SeriesSource(tr), len(tr.class_names)
        for method in ("mae", "ts2vec", "random init"):
            torch.manual_seed(0)
            cfg = enc.model_copy(update={"series_stride": 4}) if method == "ts2vec" else enc
            m = build_method("mae" if method == "random init" else method, {}, cfg, src.spec)
            m = m.eval() if method == "random init" else pretrain(m, src, seconds, 64)
            ftr, fte = series_features(m.encoder, tr.values), series_features(m.encoder, te.values)
            lin = accuracy(te.labels, linear_probe(ftr, torch.from_numpy(tr.labels), fte, k))
            knn = accuracy(te.labels, knn_predict(ftr, torch.from_numpy(tr.labels), fte, k, k=min(20, len(tr))))
            print(f"{name} {method}: linear probe {lin:.3f}, kNN {knn:.3f} (full train labels)", flush=True)


def ett(seconds: float) -> None:
    s = read_long_series(DATA / "timeseries/forecasting/ETTh1.csv")
    for L in (336, 512):
        b = forecast_borders(s.values.shape[1], L)
        v, _, _ = standardize(s.values, b["train"][1])
        for H in (96, 336):
            model = fit_linear_forecaster(*forecast_windows(v, *b["train"], L, H))
            xt, yt = forecast_windows(v, *b["test"], L, H)
            e = forecast_errors(model.predict(xt), yt)
            print(f"ETTh1 linear L={L} H={H}: test MSE {e['mse']:.4f} MAE {e['mae']:.4f}", flush=True)
    L, H = 336, 96
    b = forecast_borders(s.values.shape[1], L)
    src = WindowSource(s, window=L, stride=4, start=0, end=b["train"][1])  # train rows, train statistics
    enc = EncoderConfig(size="custom", width=64, depth=3, heads=4, series_patch=12)
    torch.manual_seed(0)
    m = pretrain(build_method("mae", {}, enc, src.spec), src, seconds, 32)
    v, _, _ = standardize(s.values, b["train"][1])
    x, y = forecast_windows(v, *b["train"], L, H)
    xv, yv = forecast_windows(v, *b["val"], L, H)
    xt, yt = forecast_windows(v, *b["test"], L, H)
    torch.manual_seed(0)
    for name, encoder in (("ssl", m.encoder), ("random init", build_encoder(enc, src.spec))):
        torch.manual_seed(0)
        f = train_forecaster(PatchForecaster(encoder, L, H), x, y, epochs=100, lr=1e-3, batch_size=64,
                             freeze_encoder=True, max_steps=300, val=(xv[::8], yv[::8]))
        e = forecast_errors(predict(f, xt), yt)
        print(f"ETTh1 L={L} H={H} linear probing (300 head steps) on the {name} encoder: test MSE {e['mse']:.4f} "
              f"MAE {e['mae']:.4f}", flush=True)


def main() -> None:
    jobs = {"tables": tables, "tables-ssl": tables_ssl, "ucr": ucr, "ucr-ssl": ucr_ssl, "ett": ett}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("job", choices=sorted(jobs))
    p.add_argument("--seconds", type=float, default=60.0, help="pretraining time per model")
    args = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no data at {DATA}")
    torch.set_num_threads(1)
    jobs[args.job](args.seconds)


if __name__ == "__main__":
    main()
