"""Evaluation pieces for tables and series: metrics, supervised baselines (GBDT, MiniRocket), anomaly scores
and forecasting, each on small synthetic data that a correct implementation must solve."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.baselines import GradientBoosting, MiniRocketRidge
from selfsup.evaluate.features import extract_features, raw_pair, table_design
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
from selfsup.evaluate.knn import knn_probe
from selfsup.evaluate.linear import linear_classifier
from selfsup.evaluate.metrics import accuracy, anomaly_metrics, auprc, auroc, classification_metrics
from selfsup.evaluate.minirocket import INDICES, MiniRocket, fit_dilations, quantiles
from selfsup.evaluate.outliers import (
    adbench_split,
    embedding_knn_scores,
    isolation_forest_scores,
    knn_distance_scores,
    reconstruction_scores,
    window_to_points,
)
from selfsup.methods import build_method

RNG = np.random.default_rng(0)
TINY = EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8)


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_by_hand():
    y, s = [0, 1, 1, 0], [0.1, 0.9, 0.4, 0.5]
    assert auroc(y, s) == 0.75  # positive above negative in 3 of the 4 pairs
    assert auprc(y, s) == pytest.approx((1 + 2 / 3) / 2)  # precision 1 at the first positive, 2/3 at the second
    assert accuracy(y, np.array([[1, 0], [0, 1], [1, 0], [1, 0]])) == 0.75
    m = classification_metrics(y, np.stack([1 - np.array(s), s], 1))
    assert m["top1"] == 0.75 and m["auroc"] == 0.75
    assert math.isnan(auroc([1, 1], [0.2, 0.3])) and math.isnan(anomaly_metrics([0, 0], [0.1, 0.2])["auprc"])


# --- MiniRocket ------------------------------------------------------------------------------------------


def reference_output(x: np.ndarray, dilation: int, kernel: int) -> np.ndarray:
    """One kernel's output as the reference code computes it (C_alpha + three C_gamma rows)."""
    T, pad = len(x), 4 * dilation
    A, G = -x, 3 * x
    c_alpha, c_gamma = A.copy(), np.zeros((9, T))
    c_gamma[4] = G
    start, end = dilation, T - pad
    for g in range(4):
        c_alpha[-end:] += A[:end]
        c_gamma[g, -end:] = G[:end]
        end += dilation
    for g in range(5, 9):
        c_alpha[:-start] += A[start:]
        c_gamma[g, :-start] = G[start:]
        start += dilation
    i0, i1, i2 = INDICES[kernel]
    return c_alpha + c_gamma[i0] + c_gamma[i1] + c_gamma[i2]


def test_minirocket_kernels_dilations_and_quantiles_match_the_reference():
    x = RNG.normal(size=50)
    mr = MiniRocket()
    out = mr._outputs(torch.tensor(x[None, None], dtype=torch.float64), 3, torch.ones(84, 1, dtype=torch.float64))
    for k in (0, 17, 83):
        np.testing.assert_allclose(out[0, k].numpy(), reference_output(x, 3, k), atol=1e-10)
    dilations, counts = fit_dilations(150)
    assert counts.sum() == 10_000 // 84 and dilations[0] == 1 and dilations[-1] <= (150 - 1) // 8
    assert quantiles(2) == pytest.approx([0.6180340, 0.2360680])


def waves(n: int, freq: float, length: int = 64) -> np.ndarray:
    t = np.linspace(0, 1, length)
    phase = RNG.uniform(0, 2 * np.pi, (n, 1))
    return (np.sin(2 * np.pi * freq * t + phase) + 0.3 * RNG.normal(size=(n, length)))[:, None].astype(np.float32)


def test_minirocket_separates_two_frequencies():
    x = np.concatenate([waves(60, 3), waves(60, 6)])
    y = np.repeat([0, 1], 60)
    train = np.r_[0:20, 60:80]
    test = np.setdiff1d(np.arange(120), train)
    mr = MiniRocket().fit(x[train])
    f = mr.transform(x[:3])
    assert f.shape == (3, 9996) and f.min() >= 0 and f.max() <= 1
    np.testing.assert_array_equal(MiniRocket().fit(x[train]).transform(x[:3]), f)  # seeded: deterministic
    mr = MiniRocketRidge()
    mr.prepare(x[train], x[test])  # the transform is fitted on the pool without labels
    scores, chosen = mr.predict(np.arange(len(train)), y[train], 2, seed=0)
    assert accuracy(y[test], scores) >= 0.95 and np.allclose(scores.sum(1), 1)
    assert chosen["alpha"] in np.logspace(-3, 3, 10) and "leave-one-out" in chosen["selection"]


def test_multivariate_minirocket_and_nearest_neighbour():
    # class = which channel carries the fast wave; random phase keeps raw 1-NN from memorising
    a, b = waves(40, 6), waves(40, 6)
    quiet = 0.3 * RNG.normal(size=(40, 1, 64)).astype(np.float32)
    x = np.concatenate([np.concatenate([a[:20], quiet[:20]], 1), np.concatenate([quiet[20:], b[20:]], 1)])
    y = np.repeat([0, 1], 20)
    train, test = np.r_[0:8, 20:28], np.r_[8:20, 28:40]
    mr = MiniRocketRidge()
    mr.prepare(x[train], x[test])
    assert accuracy(y[test], mr.predict(np.arange(len(train)), y[train], 2, seed=0)[0]) == 1.0
    # the raw-window kNN: raw values (gaps interpolated, a shorter series' end held) under the kNN protocol
    pts = np.array([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], [[1.0, np.nan, 0.0]], [[0.2, 0.8, np.nan]]], np.float32)
    a, b = raw_pair(pts[:2], pts[2:])
    assert b.numpy() == pytest.approx(np.array([[1.0, 0.5, 0.0], [0.2, 0.8, 0.8]]))
    s, chosen = knn_probe(a, np.array([0, 1]), b, 2)  # cosine similarity, as for any features
    assert s.argmax(1).tolist() == [0, 1] and chosen["k"] == 20  # one label per class: the default k


# --- table baselines ------------------------------------------------------------------------------------


def test_table_baselines_use_numbers_categories_and_missing_values():
    n = 400
    x = RNG.normal(size=(n, 3)).astype(np.float32)
    cat = RNG.integers(1, 5, size=(n, 1))
    y = ((x[:, 0] > 0) ^ (cat[:, 0] >= 3)).astype(np.int64)  # needs both the number and the category
    x[RNG.random(n) < 0.2, 1] = np.nan  # missing values in an irrelevant column
    tr, te = np.arange(300), np.arange(300, n)
    pool, test = {"features": x[tr], "categories": cat[tr]}, {"features": x[te], "categories": cat[te]}
    gb = GradientBoosting()
    gb.prepare(pool, test)
    probs, chosen = gb.predict(np.arange(300), y[tr], 2, seed=0)
    assert accuracy(y[te], probs) >= 0.9 and np.allclose(probs.sum(1), 1)
    assert "3-fold cross-validation on 300 labels" == chosen["selection"] and chosen["max_iter"] >= 1
    # the raw design: numbers (missing -> 0), a missing flag for column 1, one-hot categories 0..4
    a, b = table_design(pool, test)
    assert a.shape == (300, 3 + 1 + 5) and torch.isfinite(a).all() and (a[:, 4:].sum(1) == 1).all()
    # logistic regression on it (the linear protocol's "raw") needs the interaction written out
    xi = np.concatenate([x, (x[:, :1] * np.where(cat >= 3, -1, 1))], 1).astype(np.float32)
    a, b = table_design({"features": xi[tr], "categories": cat[tr]}, {"features": xi[te], "categories": cat[te]})
    probs, chosen = linear_classifier(a, y[tr], b, 2)
    assert accuracy(y[te], probs) >= 0.9 and "cross-validation" in chosen["selection"]
    # a class absent from a few-shot draw keeps its column (probability 0)
    three, _ = gb.predict(np.arange(6), np.array([0, 1, 0, 1, 0, 1]), 3, seed=0)
    assert three.shape == (100, 3) and (three[:, 2] == 0).all()


# --- anomaly scores ------------------------------------------------------------------------------------------


def test_baseline_anomaly_scores_find_obvious_outliers():
    normal = RNG.normal(size=(500, 4))
    direction = RNG.normal(size=(10, 4))
    outliers = 8.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True) * np.linspace(1, 2, 10)[:, None]
    x = np.concatenate([normal, outliers])
    y = np.r_[np.zeros(500), np.ones(10)].astype(int)
    fit, score = adbench_split(y, seed=0)
    assert len(score) == 153 and y[score].sum() == 3  # 30 %, stratified
    for s in (isolation_forest_scores(x[fit], x[score]), knn_distance_scores(x[fit], x[score])):
        assert anomaly_metrics(y[score], s)["auroc"] >= 0.99
    same = knn_distance_scores(x, x, k=1, same=True)  # its own zero distance does not count
    assert (same > 0).all() and auroc(y, same) >= 0.99
    # embeddings: cosine distance, so what stands out is the direction, not the length
    emb = np.r_[[1.0, 0, 0] + 0.1 * RNG.normal(size=(100, 3)), [0, 3.0, 0] + 0.1 * RNG.normal(size=(3, 3))]
    assert auroc(np.r_[np.zeros(100), np.ones(3)], embedding_knn_scores(emb, emb, same=True)) == 1.0
    assert knn_distance_scores(np.array([[0.0], [3.0]]), np.array([[1.0]]), k=2)[0] == 2.0


def test_window_scores_spread_over_points():
    pts = window_to_points(np.array([1.0, 5.0, 2.0]), np.array([0, 2, 4]), window=3, length=8)
    assert pts[:7].tolist() == [1, 1, 5, 5, 5, 2, 2] and np.isnan(pts[7])


def test_reconstruction_error_flags_rows_that_break_the_learned_rule():
    torch.manual_seed(0)
    spec = InputSpec(modality="table", num_features=2, cardinalities=[3])
    m = build_method("mae", {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.34},
                     TINY, spec)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(150):
        a = torch.randn(64)
        loss = m({"features": torch.stack([a, -a], 1), "categories": (a > 0).long()[:, None] + 1})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = np.random.default_rng(1).normal(size=50).astype(np.float32)
    feats, cats = np.stack([a, -a], 1), (a > 0).astype(np.int64)[:, None] + 1
    feats[:3, 1] = feats[:3, 0]  # three rows break "b = -a" (their values are each plausible alone)
    y = np.r_[np.ones(3), np.zeros(47)]
    scores = reconstruction_scores(m, {"features": feats, "categories": cats}, passes=8)
    assert scores.shape == (50,) and auroc(y, scores) >= 0.95
    f = extract_features(m.encoder, {"features": feats, "categories": cats}, batch_size=16)
    assert f.shape == (50, 16) and torch.isfinite(f).all()


def test_series_reconstruction_scores_and_features():
    torch.manual_seed(0)
    spec = InputSpec(modality="series", channels=1, series_length=64)
    m = build_method("mae", {}, TINY, spec)
    x = waves(8, 4)
    x[0, 0, 30:34] += 6.0
    s = reconstruction_scores(m, {"series": x}, passes=2)
    assert s.shape == (8,) and np.isfinite(s).all()
    f = extract_features(m.encoder, x, batch_size=3)
    assert f.shape == (8, 16)
    torch.testing.assert_close(f, m.encoder.eval()(torch.from_numpy(x)))


# --- forecasting -----------------------------------------------------------------------------------------------


def test_ett_borders_and_windows():
    b = forecast_borders(17420, 96)
    assert b == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert forecast_borders(69680, 512, "ett_minute")["test"] == (46080 - 512, 57600)
    assert forecast_borders(1000, 10, "ratio") == {"train": (0, 700), "val": (690, 800), "test": (790, 1000)}
    v = np.arange(20, dtype=np.float32).reshape(2, 10)
    x, y = forecast_windows(v, 0, 10, lookback=4, horizon=2)
    assert x.shape == (5, 2, 4) and y.shape == (5, 2, 2)
    assert x[1, 1].tolist() == [11, 12, 13, 14] and y[1, 1].tolist() == [15, 16]
    z, mean, std = standardize(v, 5)
    assert mean.tolist() == [2.0, 12.0] and z[0, :5].mean() == pytest.approx(0.0, abs=1e-6)


def sinusoids(T: int) -> np.ndarray:
    t = np.arange(T)
    return np.stack([np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 12),
                     np.cos(2 * np.pi * t / 24)]).astype(np.float32) + 0.01 * RNG.normal(size=(2, T)).astype(np.float32)


def test_linear_forecaster_solves_a_sinusoid():
    v = sinusoids(2000)
    x, y = forecast_windows(v, 0, 1400, 96, 48)
    model = fit_linear_forecaster(x, y)
    xt, yt = forecast_windows(v, 1400 - 96, 2000, 96, 48)
    err = forecast_errors(model.predict(xt), yt)
    assert err["mse"] < 1e-3 and err["mae"] < 0.03
    assert forecast_errors(np.zeros_like(yt), yt)["mse"] > 0.3  # what not forecasting scores


def test_patch_forecaster_head_learns_a_sinusoid():
    torch.manual_seed(0)
    v = sinusoids(1200)
    x, y = forecast_windows(v, 0, 900, 48, 24)
    xt, yt = forecast_windows(v, 900 - 48, 1200, 48, 24)
    enc = build_encoder(TINY, InputSpec(modality="series", channels=2, series_length=48))
    model = PatchForecaster(enc, lookback=48, horizon=24)
    model, fit = train_forecaster(model, x, y, steps=250, lr=3e-3, batch_size=64, val=(xt[:50], yt[:50]))
    err = forecast_errors(predict(model, xt), yt)
    assert err["mse"] < 0.05 and 0 < fit["best_step"] <= 250  # predicting zeros scores ~0.6
    # validation targets that training cannot fit: it stops after `patience` checks without a gain, far
    # below the cap, and keeps the best weights
    noise = (xt[:50], np.random.default_rng(0).normal(size=yt[:50].shape).astype(np.float32))
    _, fit = train_forecaster(PatchForecaster(build_encoder(TINY, InputSpec(modality="series", channels=2,
                                                                            series_length=48)), 48, 24),
                              x, y, steps=5000, lr=3e-3, batch_size=64, val=noise, eval_every=10, patience=2)
    assert fit["steps"] < 1000 and not fit["hit_cap"] and fit["best_step"] <= fit["steps"] - 20
    frozen = PatchForecaster(enc, 48, 24)
    before = [p.clone() for p in enc.parameters()]
    train_forecaster(frozen, x[:64], y[:64], steps=2, freeze_encoder=True)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters(), strict=True))


def test_forecast_fine_tuning_reports_progress():
    """A long fine-tune is not silent (it printed nothing for 37 minutes): a line per validation check,
    at most every ``every_s`` seconds."""
    torch.manual_seed(0)
    v = sinusoids(600)
    x, y = forecast_windows(v, 0, 450, 48, 24)
    said: list[str] = []
    model = PatchForecaster(build_encoder(TINY, InputSpec(modality="series", channels=2, series_length=48)), 48, 24)
    train_forecaster(model, x, y, steps=30, batch_size=16, val=(x[:20], y[:20]), eval_every=10, progress=said.append,
                     every_s=0.0)
    assert len(said) == 3 and said[0].strip().startswith("step 10 (at most 30)") and "validation mse" in said[0]
