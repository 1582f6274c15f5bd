"""Few-label evaluation: records, features, kNN, linear probe, fine-tuning and the protocol runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from selfsup.adapt.finetune import FinetuneRecipe, finetune, lr_factor, random_shift
from selfsup.data.spec import normalize, to_float
from selfsup.data.splits import sample_few, stratified_split
from selfsup.encoders.vit import vit
from selfsup.evaluate import (
    cached_features,
    evaluate_few_label,
    extract_features,
    format_table,
    knn_predict,
    linear_probe,
    load_records,
    merge_records,
    raw_features,
    record,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run 5-10x slower with 2 intra-op threads on a shared 2-core box; restore after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_vit() -> torch.nn.Module:
    return vit("custom", img_size=8, patch_size=4, in_chans=1, width=32, depth=1, heads=2)


def halves(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """8x8 grey uint8 images: class 0 has a bright left half, class 1 a bright right half."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    bright = torch.randint(180, 256, (n, 1, 8, 4), generator=g)
    x[y == 0, :, :, :4] = bright[y == 0]
    x[y == 1, :, :, 4:] = bright[y == 1]
    return x.to(torch.uint8), y.numpy()


def blobs(n: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    centres = torch.stack([torch.ones(d), -torch.ones(d)])
    return centres[y] * 3 + torch.randn(n, d, generator=g), y


# ---- records ------------------------------------------------------------------------------------


def test_record_shape():
    r = record("digits", "knn", "ssl", "top1", [0.5, 0.7, 0.6], shots=5, n_test=100)
    assert {k: r[k] for k in ("task", "protocol", "encoder", "shots", "metric", "n_seeds", "n_test")} == {
        "task": "digits", "protocol": "knn", "encoder": "ssl", "shots": 5, "metric": "top1", "n_seeds": 3,
        "n_test": 100,
    }
    assert "label_fraction" not in r
    assert r["mean"] == pytest.approx(0.6) and r["std"] == pytest.approx(np.std([0.5, 0.7, 0.6]))
    assert record("t", "linear", "raw", "top1", [1.0], label_fraction=0.1)["label_fraction"] == 0.1
    with pytest.raises(ValueError):
        record("t", "knn", "ssl", "top1", [1.0], shots=1, label_fraction=0.1)
    json.dumps(r)


def test_merge_records_replaces_same_identity(tmp_path):
    path = tmp_path / "run" / "metrics.json"
    a = record("t", "knn", "ssl", "top1", [0.5], shots=5)
    b = record("t", "knn", "raw", "top1", [0.3], shots=5)
    merge_records(path, [a, b])
    a2 = record("t", "knn", "ssl", "top1", [0.9], shots=5)
    c = record("t", "knn", "ssl", "top1", [0.4], label_fraction=0.1)
    peer = record("t", "knn", "ssl", "top1", [0.8], shots=5, peer="hf-vitmae")
    defects = [record("t", "anomaly", "ssl", "image_auroc", [v], defect=d) for v, d in [(0.7, "hole"), (0.6, "cut")]]
    merged = merge_records(path, [a2, c, peer, *defects])
    assert merged == load_records(path)
    assert [r["mean"] for r in merged] == [0.9, 0.3, 0.4, 0.8, 0.7, 0.6]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert load_records(tmp_path / "absent.json") == []
    table = format_table(merged)
    assert "5-shot" in table and "10%" in table and "0.9000 ± 0.0000" in table and "hf-vitmae" in table


# ---- features -----------------------------------------------------------------------------------


def test_extract_features_batched_eval_and_restores_mode():
    enc = tiny_vit().train()
    x, _ = halves(10)
    feats = extract_features(enc, x.numpy(), batch_size=3)
    assert feats.shape == (10, enc.num_features) and enc.training
    with torch.no_grad():
        ref = enc.eval()(normalize(to_float(x)))
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert raw_features(x).shape == (10, 64) and 0 <= raw_features(x).min() and raw_features(x).max() <= 1
    small = raw_features(x, max_side=4)
    torch.testing.assert_close(small, torch.nn.functional.avg_pool2d(to_float(x), 2).flatten(1))


def test_cached_features_keyed_by_weights_and_images(tmp_path):
    enc = tiny_vit()
    x, _ = halves(6)
    f1 = cached_features(enc, x, tmp_path)
    assert len(list(tmp_path.glob("features-*.pt"))) == 1
    torch.testing.assert_close(cached_features(enc, x, tmp_path), f1)
    cached_features(enc, x[:3], tmp_path)  # other images: another entry
    with torch.no_grad():
        enc.norm.bias.add_(1.0)  # other weights: another entry, fresh features
    f2 = cached_features(enc, x, tmp_path)
    assert len(list(tmp_path.glob("features-*.pt"))) == 3 and not torch.allclose(f1, f2)


# ---- kNN ----------------------------------------------------------------------------------------


def test_knn_separates_blobs_and_is_chance_on_shuffled_labels():
    x, y = blobs(400)
    xt, yt = blobs(400, seed=1)
    scores = knn_predict(x, y, xt, 2)
    assert scores.shape == (400, 2) and torch.allclose(scores.sum(1), torch.ones(400))
    assert (scores.argmax(1) == yt).float().mean() > 0.99
    shuffled = y[torch.randperm(400, generator=torch.Generator().manual_seed(0))]
    acc = (knn_predict(x, shuffled, xt, 2, batch_size=7).argmax(1) == yt).float().mean()
    assert 0.4 < acc < 0.6


def test_knn_matches_hand_computation():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-1.0, 0.1], [0.6, -0.8]])
    labels = torch.tensor([0, 1, 1, 2, 0])
    test = torch.tensor([[1.0, 0.2], [-0.5, 0.5]])
    k, T = 3, 0.1
    expected = torch.zeros(2, 3)
    for i, q in enumerate(test.tolist()):
        sims = []
        for j, p in enumerate(train.tolist()):
            cos = (q[0] * p[0] + q[1] * p[1]) / (math.hypot(*q) * math.hypot(*p))
            sims.append((cos, j))
        for cos, j in sorted(sims, reverse=True)[:k]:
            expected[i, labels[j]] += math.exp(cos / T)
    expected /= expected.sum(1, keepdim=True)
    torch.testing.assert_close(knn_predict(train, labels, test, 3, k=k, temperature=T), expected)
    # k larger than the support: every point votes
    assert knn_predict(train, labels, test, 3, k=50).shape == (2, 3)


# ---- linear probe -------------------------------------------------------------------------------


def test_linear_probe_separable_and_matches_sklearn():
    x, y = blobs(60)
    xt, yt = blobs(200, seed=1)
    scores = linear_probe(x, y, xt, 2, seed=0)
    assert scores.shape == (200, 2) and (scores.argmax(1) == yt).all()
    rng = np.random.default_rng(0)
    X, Y, Xt = rng.normal(size=(80, 6)), rng.integers(0, 3, 80), rng.normal(size=(20, 6))
    sc = StandardScaler().fit(X)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(sc.transform(X), Y)
    ours = linear_probe(torch.tensor(X).float(), torch.tensor(Y), torch.tensor(Xt).float(), 3)
    np.testing.assert_allclose(ours.numpy(), ref.predict_proba(sc.transform(Xt)), atol=2e-3)
    assert linear_probe(x[:2], y[:2], xt, 2).shape == (200, 2)  # one per class still fits


# ---- sampling -----------------------------------------------------------------------------------


def test_sample_few_shots_per_class_deterministic_and_nested():
    labels = np.repeat(np.arange(4), [30, 30, 30, 3])
    labels[:5] = -1  # unknown labels are never drawn
    with pytest.warns(UserWarning, match="1 class"):
        idx = sample_few(labels, shots=5, seed=0)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 5, 3] and (labels[idx] >= 0).all()
    with pytest.warns(UserWarning):
        assert np.array_equal(idx, sample_few(labels, shots=5, seed=0))
        assert not np.array_equal(idx, sample_few(labels, shots=5, seed=1))
    assert set(sample_few(labels, shots=2, seed=0)) <= set(idx)
    with pytest.raises(ValueError):
        sample_few(labels, seed=0)


def test_sample_few_fraction_is_stratified():
    labels = np.repeat(np.arange(3), [100, 50, 4])
    idx = sample_few(labels, fraction=0.1, seed=3)
    assert np.bincount(labels[idx]).tolist() == [10, 5, 1] and len(set(idx)) == len(idx)


def test_split_pool_test_stratified_disjoint():
    labels = np.repeat(np.arange(3), [10, 6, 1])
    pool, test = stratified_split(labels, 0.5, seed=0)
    assert not set(pool) & set(test) and len(pool) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=3).tolist() == [5, 3, 0]


# ---- fine-tuning --------------------------------------------------------------------------------


def test_random_shift_translates_and_schedule():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(50, 1, 1, 1)
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and (out != x).flatten(1).any(1).sum() > 0
    # each output is some 4x4 window of the replicate-padded image
    padded = torch.nn.functional.pad(x[:1], (1,) * 4, mode="replicate")[0, 0]
    windows = {tuple(padded[i : i + 4, j : j + 4].flatten().tolist()) for i in range(3) for j in range(3)}
    assert all(tuple(o.flatten().tolist()) in windows for o in out)
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.01


def test_finetune_learns_and_leaves_encoder_untouched():
    torch.manual_seed(0)
    enc = tiny_vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    x, y = halves(40)
    xt, yt = halves(100, seed=1)
    recipe = FinetuneRecipe(steps=150, batch_size=16, layer_decay=0.75)
    probs = finetune(enc, x, y, xt, 2, seed=0, recipe=recipe)
    assert probs.shape == (100, 2) and (probs.argmax(1).numpy() == yt).mean() > 0.9
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    again = finetune(enc, x, y, xt[:10], 2, seed=0, recipe=recipe)
    torch.testing.assert_close(again, probs[:10])  # deterministic per seed


# ---- protocol runner ----------------------------------------------------------------------------


def test_evaluate_few_label_records_and_auroc(tmp_path):
    torch.manual_seed(0)
    enc = tiny_vit()
    x, y = halves(60)
    xt, yt = halves(80, seed=1)
    seen = []
    recs = evaluate_few_label(
        encoder=enc, make_scratch_encoder=tiny_vit, train_images=x, train_labels=y, test_images=xt,
        test_labels=yt, num_classes=2, protocols=("knn", "linear"), shots=[4], label_fractions=None,
        seeds=(0, 1, 2), task="halves", recipe=FinetuneRecipe(steps=10, batch_size=8), progress=seen.append,
        feature_cache_dir=tmp_path,
    )
    assert len(list(tmp_path.glob("features-*.pt"))) == 2  # train pool and test, extracted once
    combos = {(r["protocol"], r["encoder"], r["metric"]) for r in recs}
    assert combos == {(p, e, m) for p, e in [("knn", "ssl"), ("knn", "raw"), ("linear", "ssl"),
                                              ("linear", "raw"), ("finetune", "scratch")]
                      for m in ("top1", "auroc")}
    assert all(r["n_seeds"] == 3 and 0 <= r["mean"] <= 1 and r["shots"] == 4 and r["n_labels"] == 8 for r in recs)
    assert seen
    # AUROC of the kNN/raw record equals sklearn's on the same draws
    feats, feats_t = raw_features(x), raw_features(xt)
    expected = []
    for seed in (0, 1, 2):
        idx = sample_few(y, shots=4, seed=seed)
        p = knn_predict(feats[idx], torch.from_numpy(y[idx]), feats_t, 2)
        expected.append(roc_auc_score(yt, p[:, 1].numpy()))
    (got,) = [r for r in recs if (r["protocol"], r["encoder"], r["metric"]) == ("knn", "raw", "auroc")]
    assert got["mean"] == pytest.approx(np.mean(expected))


def test_evaluate_few_label_multiclass_fraction_with_finetune():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (30, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = np.arange(30) % 3
    recs = evaluate_few_label(
        encoder=tiny_vit(), make_scratch_encoder=None, train_images=x, train_labels=y, test_images=x[:9],
        test_labels=y[:9], num_classes=3, protocols=("finetune",), shots=None, label_fractions=[0.2],
        seeds=(0, 1), task="noise", recipe=FinetuneRecipe(steps=3, batch_size=4),
    )
    assert [(r["protocol"], r["encoder"], r["metric"], r["label_fraction"]) for r in recs] == [
        ("finetune", "ssl", "top1", 0.2)
    ]
    with pytest.raises(ValueError):
        evaluate_few_label(encoder=tiny_vit(), make_scratch_encoder=None, train_images=x, train_labels=y,
                           test_images=x, test_labels=y, num_classes=3, shots=None, label_fractions=None,
                           task="noise")
