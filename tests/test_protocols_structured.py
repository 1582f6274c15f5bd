"""The protocols on tables and series, each on small synthetic data a correct implementation must
solve: few-label classification with the tuned baselines and the verdict, AUPRC for rare
positives, anomaly detectors, closed-form forecasting heads, and the train / test split of one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.adapt.finetune import FinetuneRecipe
from selfsup.data import open_source
from selfsup.data.sources.table import read_table
from selfsup.data.spec import InputSpec
from selfsup.data.splits import holdout_split
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.baselines import MiniRocketRidge, supervised_baselines
from selfsup.evaluate.fewshot import evaluate_few_label
from selfsup.evaluate.forecast import fit_linear_forecaster, forecast_errors, forecast_windows
from selfsup.evaluate.forecast_linear import fit_linear_heads, frozen_tokens, raw_windows
from selfsup.evaluate.metrics import anomaly_metrics, scores_metrics
from selfsup.evaluate.outliers import detector_scores
from selfsup.evaluate.verdict import verdicts
from selfsup.methods import build_method

RNG = np.random.default_rng(0)
TINY = EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8)
QUICK = FinetuneRecipe(batch_size=16, lr_grid=(1.0,), patience=2, min_steps=10, max_steps=40)


def table(n: int, rare: float = 0.5) -> tuple[dict, np.ndarray]:
    """Rows whose class is the sign of x0 (shifted so that a ``rare`` share is positive), with noise
    columns, a missing value here and there and a category that agrees with the class."""
    x = RNG.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > np.quantile(x[:, 0], 1 - rare)).astype(np.int64)
    x[:, 0] += 2.0 * y
    x[RNG.random((n, 4)) < 0.05] = np.nan
    cat = np.where(RNG.random(n) < 0.9, y + 1, 2 - y)[:, None].astype(np.int64)
    return {"features": x, "categories": cat}, y


def test_few_label_table_protocol_with_tuned_baselines_and_the_verdict():
    torch.manual_seed(0)
    spec = InputSpec(modality="table", num_features=4, cardinalities=[3])
    pool, y_pool = table(200)
    test, y_test = table(100)
    enc = build_encoder(TINY, spec)
    recs = evaluate_few_label(
        encoder=enc, make_scratch_encoder=lambda: build_encoder(TINY, spec), train_images=pool,
        train_labels=y_pool, test_images=test, test_labels=y_test, num_classes=2, task="t",
        protocols=("knn", "linear", "finetune"), baselines=("raw", "scratch"),
        supervised=supervised_baselines(["gbdt"], "table"), shots=[10], seeds=(0, 1, 2), finetune_seeds=2,
        recipe=QUICK)
    by = {(r["protocol"], r["encoder"], r["metric"]): r for r in recs}
    assert by["supervised", "gbdt", "top1"]["mean"] >= 0.85 and by["supervised", "gbdt", "top1"]["n_seeds"] == 3
    assert by["linear", "raw", "top1"]["mean"] >= 0.85  # logistic regression on the raw table
    assert by["finetune", "ssl", "top1"]["n_seeds"] == 2 and "lr" in by["finetune", "ssl", "top1"]["chosen"][0]
    assert {"min_samples_leaf", "learning_rate", "max_iter"} <= set(by["supervised", "gbdt", "top1"]["chosen"][0])
    found = verdicts(recs)
    pairs = {(v["protocol"], v["baseline"]) for v in found}
    # every SSL protocol is compared with the supervised model, and with its own protocol's baseline
    assert pairs == {("knn", "raw"), ("knn", "gbdt"), ("linear", "raw"), ("linear", "gbdt"),
                     ("finetune", "scratch"), ("finetune", "gbdt")}
    v = next(v for v in found if (v["protocol"], v["baseline"]) == ("finetune", "gbdt"))
    assert len(v["values"]) == 2  # paired over the draws both had


def test_few_label_series_protocol_with_minirocket():
    t = np.arange(64)
    def waves(n: int, period: float) -> np.ndarray:
        phase = RNG.uniform(0, 2 * np.pi, (n, 1))
        return (np.sin(2 * np.pi * t / period + phase) + 0.2 * RNG.normal(size=(n, 64)))[:, None].astype(np.float32)

    x = np.concatenate([waves(40, 4), waves(40, 16)])
    x[::7, :, 50:] = np.nan  # shorter series, padded
    y = np.repeat([0, 1], 40)
    pool, test = np.r_[0:20, 40:60], np.r_[20:40, 60:80]
    spec = InputSpec(modality="series", channels=1, series_length=64)
    recs = evaluate_few_label(
        encoder=build_encoder(TINY, spec), make_scratch_encoder=None, train_images=x[pool], train_labels=y[pool],
        test_images=x[test], test_labels=y[test], num_classes=2, task="s", protocols=("knn",), baselines=("raw",),
        supervised=[MiniRocketRidge()], shots=[5], seeds=(0, 1))
    by = {(r["protocol"], r["encoder"], r["metric"]): r["mean"] for r in recs}
    assert by["supervised", "minirocket", "top1"] >= 0.95 and ("knn", "raw", "top1") in by


def test_rare_positives_get_the_auprc_of_the_rare_class():
    y = np.r_[np.zeros(95), np.ones(5)].astype(int)
    p = np.zeros((100, 2))
    p[:, 1] = np.r_[np.linspace(0, 0.5, 95), [0.9, 0.8, 0.1, 0.95, 0.7]]
    p[:, 0] = 1 - p[:, 1]
    m = scores_metrics(torch.from_numpy(p), y, 2)
    # rare positives at ranks 1, 2, 3, 4 and one among the negatives: AP = (1 + 1 + 1 + 1 + 5/k) / 5
    k = 1 + 4 + int((np.linspace(0, 0.5, 95) > 0.1).sum())
    assert m["auprc"] == pytest.approx((4 + 5 / k) / 5) and "auroc" in m
    balanced = scores_metrics(torch.from_numpy(p), np.r_[np.zeros(50), np.ones(50)].astype(int), 2)
    assert "auprc" not in balanced  # only where the rarer class is rare (metrics.IMBALANCED)
    m = scores_metrics(torch.from_numpy(p[:, ::-1].copy()), 1 - y, 2)  # the rare class is 0: its AUPRC
    assert m["auprc"] == pytest.approx((4 + 5 / k) / 5)


def test_anomaly_detectors_find_obvious_outliers_in_a_table():
    torch.manual_seed(0)
    spec = InputSpec(modality="table", num_features=4, cardinalities=[3])
    normal, _ = table(300)
    test, _ = table(60)
    test["features"][:6] = 9.0  # six rows far from everything
    method = build_method("mae", {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}, TINY, spec)
    scores = detector_scores(method.encoder, method, normal, test, passes=2)
    assert set(scores) == {("ssl", "knn"), ("ssl", "reconstruction"), ("raw", "knn"), ("raw", "iforest"),
                           ("ssl", "ensemble")}
    y = np.r_[np.ones(6), np.zeros(54)]
    assert set(np.argsort(scores["raw", "knn"])[::-1][:6]) == set(range(6))
    assert anomaly_metrics(y, scores["raw", "iforest"])["auroc"] >= 0.95
    assert anomaly_metrics(y, scores["ssl", "ensemble"])["auroc"] >= 0.95
    alone = detector_scores(method.encoder, method, normal, {k: v[:1] for k, v in test.items()}, passes=2)
    assert alone["ssl", "ensemble"][0] == pytest.approx(scores["ssl", "ensemble"][0], rel=1e-5)  # row by row
    assert all(len(s) == 60 and np.isfinite(s).all() for s in scores.values())


def test_closed_form_heads_match_one_fit_per_horizon_and_solve_a_sinusoid():
    t = np.arange(1500)
    v = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 17)]).astype(np.float64)
    v += 0.01 * RNG.normal(size=v.shape)
    borders = {"train": (0, 900), "val": (900 - 48, 1200), "test": (1200 - 48, 1500)}
    fits = fit_linear_heads(raw_windows, v, borders, 48, [12, 36], batch_size=50, ridges=(1e-6,))
    for h in (12, 36):  # one pass for both horizons gives each horizon's own least squares fit
        x, y = forecast_windows(v, *borders["train"], 48, h)
        xt, yt = forecast_windows(v, *borders["test"], 48, h)
        alone = forecast_errors(fit_linear_forecaster(x, y, ridge=1e-6).predict(xt), yt)
        assert fits[h]["mse"] == pytest.approx(alone["mse"], rel=1e-3) and fits[h]["mse"] < 1e-3
        assert fits[h]["n_train"] == 900 - 48 - h + 1 and fits[h]["n_test"] == 300 - h + 1
    inputs, truth, pred = fits[12]["examples"]
    assert inputs.shape == (3, 2, 48) and truth.shape == pred.shape == (3, 2, 12)
    # on a frozen (random) encoder's tokens, in its RevIN scale: still a working forecaster
    enc = build_encoder(TINY, InputSpec(modality="series", channels=2, series_length=48))
    tok = fit_linear_heads(frozen_tokens(enc), v.astype(np.float32), borders, 48, [12])
    assert tok[12]["mse"] < 0.1 and tok[12]["ridge"] in (1e-6, 1e-4, 1e-2, 1e-1, 1.0)


def test_holdout_split_of_one_file_is_adbench_like_and_reads_with_training_statistics(tmp_path: Path):
    labels = np.r_[np.zeros(90), np.ones(10)]
    train, test = holdout_split(100, labels)
    assert len(test) == 30 and labels[test].sum() == 3 and not set(train) & set(test)
    np.testing.assert_array_equal(holdout_split(100, labels)[0], train)  # the same split every time
    x = RNG.normal(size=(100, 3)).astype(np.float32)
    x[:, 0] += 10 * labels
    np.savez(tmp_path / "ad.npz", X=x, y=labels.astype(int))
    tr = read_table(tmp_path / "ad.npz", split="train")
    te = read_table(tmp_path / "ad.npz", split="test", schema=tr.schema.to_dict())
    assert len(tr) == 70 and len(te) == 30 and not set(tr.keys) & set(te.keys)
    assert tr.schema.mean[0] == pytest.approx(float(x[train, 0].mean()), rel=1e-5)  # statistics of the 70 %
    src = open_source(str(tmp_path / "ad.npz"), split="test", schema=tr.schema.to_dict())
    assert src.spec.modality == "table" and len(src) == 30 and src.table.labels.sum() == 3
