"""The semi protocol (label propagation over the unlabelled pool) and the hybrid probe: a manifold
that only the pool reveals, inductive test predictions, and both protocols through the few-label
runner with every baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.baselines import MiniRocketRidge
from selfsup.evaluate.fewshot import evaluate_few_label, plan
from selfsup.evaluate.knn import knn_probe
from selfsup.evaluate.semi import semi_probe
from selfsup.evaluate.verdict import verdicts


def moons(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Two interleaved half circles (class = which), a little noise: neighbours follow the arcs."""
    y = rng.integers(0, 2, n)
    a = rng.uniform(0, np.pi, n)
    x = np.where(y[:, None] == 0, np.c_[np.cos(a), np.sin(a)], np.c_[1 - np.cos(a), 0.5 - np.sin(a)])
    x = x + 0.05 * rng.normal(size=x.shape)
    return torch.tensor(np.c_[x, np.ones(n)], dtype=torch.float32), y  # a constant column: cosine ~ position


def test_propagation_follows_the_pool_where_the_labels_alone_do_not():
    rng = np.random.default_rng(0)
    pool, yp = moons(600, rng)
    test, yt = moons(300, rng)
    idx = np.r_[np.flatnonzero(yp == 0)[:3], np.flatnonzero(yp == 1)[:3]]
    probs, info = semi_probe(pool, idx, yp[idx], test, 2, seed=0)
    semi = float((probs.argmax(1).numpy() == yt).mean())
    knn, _ = knn_probe(pool[idx], yp[idx], test, 2)
    base = float((knn.argmax(1).numpy() == yt).mean())
    assert semi >= 0.9 and semi >= base + 0.05, (semi, base, info)
    assert {"k", "alpha", "standardize"} <= set(info) and "cross-validation on 6 labels" in info["selection"]


def test_test_samples_are_classified_one_at_a_time():
    rng = np.random.default_rng(1)
    pool, yp = moons(120, rng)
    test, _ = moons(50, rng)
    idx = np.r_[np.flatnonzero(yp == 0)[:3], np.flatnonzero(yp == 1)[:3]]
    whole, _ = semi_probe(pool, idx, yp[idx], test, 2, seed=0)
    alone, _ = semi_probe(pool, idx, yp[idx], test[7:8], 2, seed=0)
    torch.testing.assert_close(whole[7:8], alone, rtol=1e-6, atol=1e-9)
    assert torch.allclose(whole.sum(1), torch.ones(50, dtype=whole.dtype))


@pytest.mark.slow
def test_semi_and_hybrid_run_for_every_encoder_and_enter_the_verdict():
    assert ("semi", "minirocket-features") in plan(("semi",), ("raw",), scratch=False, foundation=False,
                                                    supervised=["minirocket"])
    rng = np.random.default_rng(2)
    t = np.arange(64)

    def waves(n: int, period: float) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        return (np.sin(2 * np.pi * t / period + phase) + 0.2 * rng.normal(size=(n, 64)))[:, None].astype(np.float32)

    x = np.concatenate([waves(40, 4), waves(40, 16)])
    y = np.repeat([0, 1], 40)
    pool, test = np.r_[0:25, 40:65], np.r_[25:40, 65:80]
    spec = InputSpec(modality="series", channels=1, series_length=64)
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8), spec)
    recs = evaluate_few_label(
        encoder=enc, make_scratch_encoder=None, train_images=x[pool], train_labels=y[pool], test_images=x[test],
        test_labels=y[test], num_classes=2, task="s", protocols=("semi", "hybrid"), baselines=("raw",),
        supervised=[MiniRocketRidge(num_features=840)], shots=[3], seeds=(0, 1))
    by = {(r["protocol"], r["encoder"]): r for r in recs if r["metric"] == "top1"}
    assert {("semi", "ssl"), ("semi", "raw"), ("semi", "minirocket-features"), ("hybrid", "ssl"), ("hybrid", "raw"),
            ("supervised", "minirocket")} <= set(by)
    assert by["semi", "minirocket-features"]["mean"] >= 0.9
    assert by["semi", "ssl"]["chosen"][0]["pool"] == 50  # the pool, never the test set
    judged = {(v["protocol"], v["baseline"]) for v in verdicts(recs)}
    assert {("semi", "raw"), ("semi", "minirocket-features"), ("semi", "minirocket"), ("hybrid", "raw")} <= judged
