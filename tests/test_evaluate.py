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

from selfsup.adapt.finetune import FinetuneRecipe, lr_factor, random_shift
from selfsup.adapt.tune import finetune
from selfsup.data.spec import normalize, to_float
from selfsup.data.splits import check_disjoint, sample_few, stratified_split
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
from selfsup.evaluate.knn import choose_knn, standardize
from selfsup.evaluate.linear import choose_c
from selfsup.evaluate.metrics import expected_top1
from selfsup.evaluate.retrieval import recall_at_k
from selfsup.evaluate.verdict import paired_interval, sentence, verdicts


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
    assert lr_factor(0, 10) == pytest.approx(0.1) and lr_factor(9, 10) == lr_factor(5000, 10) == 1.0


def test_finetune_learns_and_leaves_encoder_untouched():
    torch.manual_seed(0)
    enc = tiny_vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    x, y = halves(40)
    xt, yt = halves(100, seed=1)
    recipe = FinetuneRecipe(batch_size=16, layer_decay=0.75, max_steps=400)
    probs, info = finetune(enc, x, y, xt, 2, seed=0, recipe=recipe)
    assert probs.shape == (100, 2) and (probs.argmax(1).numpy() == yt).mean() > 0.9
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert info["lr"] in [recipe.lr * m for m in recipe.lr_grid] and info["n_val"] == 8
    again, _ = finetune(enc, x, y, xt[:10], 2, seed=0, recipe=recipe)
    torch.testing.assert_close(again, probs[:10])  # deterministic per seed


# ---- protocol runner ----------------------------------------------------------------------------


def test_only_the_drawn_pool_rows_are_encoded(monkeypatch):
    """kNN / linear at 2 shots x 2 draws encode the test set and at most 8 pool rows, not the 60-row pool,
    and score exactly as with the whole pool encoded; semi still reads every pool row."""
    from selfsup.evaluate import fewshot

    enc = tiny_vit()
    x, y = halves(60)
    xt, yt = halves(30, seed=1)
    encoded: list[int] = []
    enc.register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    kw = dict(encoder=enc, make_scratch_encoder=None, train_images=x, train_labels=y, test_images=xt, test_labels=yt,
              num_classes=2, protocols=("knn", "linear"), baselines=(), shots=[2], seeds=(0, 1), task="halves")
    recs = evaluate_few_label(**kw)
    assert 30 < sum(encoded) <= 30 + 8
    encoded.clear()
    monkeypatch.setattr(fewshot, "WHOLE_POOL", {"knn", "linear"})
    whole = evaluate_few_label(**kw)
    assert sum(encoded) == 90
    assert [r["mean"] for r in recs] == pytest.approx([r["mean"] for r in whole], abs=1e-6)
    assert len(fewshot.drawn_rows(y, [("shots", 2)], (0, 1))) <= 8


def test_evaluate_few_label_records_and_auroc(tmp_path):
    torch.manual_seed(0)
    enc = tiny_vit()
    x, y = halves(60)
    xt, yt = halves(80, seed=1)
    seen = []
    recs = evaluate_few_label(
        encoder=enc, make_scratch_encoder=tiny_vit, train_images=x, train_labels=y, test_images=xt,
        test_labels=yt, num_classes=2, protocols=("knn", "linear"), shots=[4], label_fractions=None,
        seeds=(0, 1, 2), task="halves", recipe=FinetuneRecipe(max_steps=10, batch_size=8), progress=seen.append,
        feature_cache_dir=tmp_path,
    )
    assert len(list(tmp_path.glob("features-*.pt"))) == 2  # train pool and test, extracted once
    combos = {(r["protocol"], r["encoder"], r["metric"]) for r in recs}
    # asking for frozen protocols trains no scratch network
    assert combos == {(p, e, m) for p, e in [("knn", "ssl"), ("knn", "raw"), ("linear", "ssl"), ("linear", "raw")]
                      for m in ("top1", "auroc")}
    assert all(r["n_seeds"] == 3 and 0 <= r["mean"] <= 1 and r["shots"] == 4 and r["n_labels"] == 8 for r in recs)
    assert seen and all(len(r["chosen"]) == 3 and r["selection"] for r in recs)
    assert all("k" in c for r in recs if r["protocol"] == "knn" for c in r["chosen"])
    # AUROC of the kNN/raw record equals sklearn's on the same draws with the k chosen for each
    feats, feats_t = raw_features(x), raw_features(xt)
    (got,) = [r for r in recs if (r["protocol"], r["encoder"], r["metric"]) == ("knn", "raw", "auroc")]
    expected = []
    for seed, chosen in zip((0, 1, 2), got["chosen"], strict=True):
        idx = sample_few(y, shots=4, seed=seed)
        train, test = (standardize(feats[idx], feats_t) if chosen["standardize"] else (feats[idx], feats_t))
        p = knn_predict(train, torch.from_numpy(y[idx]), test, 2, k=chosen["k"])
        expected.append(roc_auc_score(yt, p[:, 1].numpy()))
    assert got["mean"] == pytest.approx(np.mean(expected))


def test_evaluate_few_label_multiclass_fraction_with_finetune():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (30, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = np.arange(30) % 3
    recs = evaluate_few_label(
        encoder=tiny_vit(), make_scratch_encoder=None, train_images=x, train_labels=y, test_images=x[:9],
        test_labels=y[:9], num_classes=3, protocols=("finetune",), shots=None, label_fractions=[0.2],
        seeds=(0, 1), task="noise", recipe=FinetuneRecipe(max_steps=3, batch_size=4),
    )
    assert [(r["protocol"], r["encoder"], r["metric"], r["label_fraction"]) for r in recs] == [
        ("finetune", "ssl", "top1", 0.2)
    ]
    # what the tuning cost beside the final training is recorded per draw (BENCHMARKS.md reports the ratio)
    assert all(c["tuning_seconds"] > 0 and c["seconds"] > 0 for c in recs[0]["chosen"])
    with pytest.raises(ValueError):
        evaluate_few_label(encoder=tiny_vit(), make_scratch_encoder=None, train_images=x, train_labels=y,
                           test_images=x, test_labels=y, num_classes=3, shots=None, label_fractions=None,
                           task="noise")


# ---- fair verdicts (issue 11) --------------------------------------------------------------------


def test_scratch_does_not_get_worse_with_more_labels():
    """A from-scratch network trained under the protocol (lr and length chosen on held-out labels)
    must not lose accuracy when it gets more labels of a task where more labels help."""
    x, y = halves(200)
    xt, yt = halves(300, seed=1)
    recipe = FinetuneRecipe(batch_size=32, max_steps=1500)
    acc = {}
    for n in (6, 60):
        idx = sample_few(y, shots=n // 2, seed=0)
        torch.manual_seed(0)
        probs, info = finetune(tiny_vit(), x[idx], y[idx], xt, 2, seed=0, recipe=recipe)
        acc[n] = expected_top1(probs, yt)
        assert not info["hit_cap"]
    assert acc[60] >= acc[6] - 0.02 and acc[60] > 0.9, acc


def test_linear_regularisation_is_chosen_per_encoder():
    """Cross-validation picks weak regularisation for clean separable features and strong for
    features that are mostly noise, each on its own labels."""
    g = torch.Generator().manual_seed(0)
    y = np.arange(60) % 2
    clean = torch.from_numpy(np.where(y[:, None] == 1, 1.0, -1.0)).float().repeat(1, 4) * 0.3 + 0.05 * torch.randn(
        60, 4, generator=g)
    noisy = torch.cat([clean[:, :1] * 0.2, torch.randn(60, 200, generator=g)], 1)
    c_clean, c_noisy = choose_c(clean, y, 2)["C"], choose_c(noisy, y, 2)["C"]
    assert c_clean > c_noisy
    assert choose_c(clean[:2], y[:2], 2)["selection"].startswith("none")  # one label per class: default


def test_choose_c_stops_scanning_once_the_score_has_fallen_twice(monkeypatch):
    """Pure noise: the strongest regularisation is best and every weaker C scores lower, so the scan
    fits three values of C per fold and stops; the full grid is scanned while the score keeps rising."""
    import selfsup.evaluate.linear as lin

    calls = []
    real = lin.linear_probe

    def counting(*args, **kwargs):
        calls.append(kwargs["c"])
        return real(*args, **kwargs)

    monkeypatch.setattr(lin, "linear_probe", counting)
    g = torch.Generator().manual_seed(0)
    y = np.arange(40) % 2
    noise = torch.randn(40, 300, generator=g)
    chosen = lin.choose_c(noise, y, 2, folds=2)
    assert sorted(set(calls)) == list(lin.C_GRID[: lin.STOP_AFTER_FALLS + 1]) and chosen["C"] in calls
    calls.clear()
    clean = torch.from_numpy(np.where(y[:, None] == 1, 1.0, -1.0)).float() * torch.linspace(0.01, 1, 5)
    lin.choose_c(clean, y, 2, folds=2)  # separable: each weaker C fits better (lower log-loss)
    assert sorted(set(calls)) == list(lin.C_GRID)


def test_collapsed_embedding_scores_chance_level():
    n = 50
    same = torch.ones(n, 8)
    labels = np.arange(n) % 5
    # retrieval: every candidate ties with the right one, so recall@K is K / n, not 1
    r = recall_at_k(same @ same.T, torch.arange(n), (1, 5))
    assert r["R@1_image_to_text"] == pytest.approx(1 / n) and r["R@5_text_to_image"] == pytest.approx(5 / n)
    # several own captions in the tie: the chance that one of 2 lies in the first slot is 2 / n
    two = recall_at_k(torch.zeros(n // 2, n), torch.arange(n) // 2, (1,))
    assert two["R@1_image_to_text"] == pytest.approx(2 / n) and two["R@1_text_to_image"] == pytest.approx(2 / n)
    # kNN: all neighbours tie, the vote is the class frequencies, accuracy is chance
    probs = knn_predict(same[:20], torch.from_numpy(labels[:20]), same[20:], 5)
    assert expected_top1(probs, labels[20:]) == pytest.approx(0.2)
    assert choose_knn(same[:20], labels[:20], 5)["loo_top1"] <= 0.2  # leaving one out tilts the vote against it
    # a model that gives every class the same probability is right 1/C of the time
    assert expected_top1(torch.full((10, 4), 0.25), np.arange(10) % 4) == pytest.approx(0.25)


def test_overlapping_pool_and_test_are_refused():
    x = torch.randint(0, 255, (10, 1, 4, 4), dtype=torch.uint8).numpy()
    ids = [f"a{i}" for i in range(10)]
    check_disjoint(x[:5], ids[:5], x[5:], ids[5:], "pool", "test")  # disjoint: fine
    with pytest.raises(ValueError, match="share 1 samples"):
        check_disjoint(x[:5], ids[:5], x[4:], ids[4:], "pool", "test")
    with pytest.raises(ValueError, match="identical"):  # same pixels under other names
        check_disjoint(x[:5], ids[:5], x[3:], [f"b{i}" for i in range(7)], "pool", "test")


def test_paired_interval_matches_a_hand_worked_example():
    # differences 0.10, 0.05, 0.15, 0.10: mean 0.10, sd 0.0408248, se 0.0204124, t(3, 0.975) = 3.182446
    mean, low, high = paired_interval([0.80, 0.75, 0.85, 0.70], [0.70, 0.70, 0.70, 0.60])
    assert mean == pytest.approx(0.10)
    assert low == pytest.approx(0.10 - 3.182446 * 0.0204124, abs=1e-5)
    assert high == pytest.approx(0.10 + 3.182446 * 0.0204124, abs=1e-5)
    assert sentence("finetune", "ssl", "scratch", "top1", mean, low, high, 4) == (
        "SSL Fine-tuning beats scratch by +0.100 top1 (95 % CI +0.035 to +0.165, 4 draws)")
    m, lo, hi = paired_interval([0.5, 0.6, 0.4], [0.5, 0.5, 0.5])
    assert lo < 0 < hi and "no significant difference" in sentence("knn", "ssl", "raw", "top1", m, lo, hi, 3)
    assert sentence("finetune", "ssl", "scratch", "top1", -mean, -high, -low, 4) == (  # the interval of what is said
        "scratch beats SSL Fine-tuning by +0.100 top1 (95 % CI +0.035 to +0.165, 4 draws)")
    m, lo, hi = paired_interval([0.5, 0.52, 0.51], [0.6, 0.61, 0.63])
    assert sentence("linear", "ssl", "raw", "top1", m, lo, hi, 3).startswith("raw beats SSL")


def test_all_labels_identical_draws_give_no_verdict():
    """With the whole pool every draw is the same label set: deterministic probes score the same in
    each draw, and a zero-width interval must not be read as certainty."""
    from selfsup.evaluate.records import record

    recs = [record("t", "linear", "ssl", "top1", [0.80] * 5, label_fraction=1.0),
            record("t", "linear", "raw", "top1", [0.79] * 5, label_fraction=1.0),
            record("t", "finetune", "ssl", "top1", [0.80, 0.82, 0.81], label_fraction=1.0),
            record("t", "finetune", "scratch", "top1", [0.70, 0.71, 0.69], label_fraction=1.0),
            record("t", "linear", "ssl", "top1", [0.80] * 3, label_fraction=0.1),
            record("t", "linear", "raw", "top1", [0.79] * 3, label_fraction=0.1)]
    by = {(v["protocol"], v["label_fraction"]): v["verdict"] for v in verdicts(recs)}
    assert "no interval" in by[("linear", 1.0)] and "beats" not in by[("linear", 1.0)]
    assert by[("finetune", 1.0)].startswith("SSL Fine-tuning beats scratch") and "3 runs on all the labels" in by[
        ("finetune", 1.0)]
    assert "beats raw" in by[("linear", 0.1)]  # different draws that agree: a real (if narrow) interval


def test_verdict_records_pair_the_same_draws():
    from selfsup.evaluate.records import record

    recs = [record("t", "finetune", "ssl", "top1", [0.8, 0.75, 0.85, 0.7], shots=5),
            record("t", "finetune", "scratch", "top1", [0.7, 0.7, 0.7, 0.6], shots=5),
            record("t", "knn", "ssl", "top1", [0.5, 0.5], shots=5)]
    (v,) = verdicts(recs)
    assert (v["protocol"], v["encoder"], v["baseline"], v["metric"], v["shots"]) == (
        "finetune", "ssl", "scratch", "top1_difference", 5)
    assert v["values"] == pytest.approx([0.1, 0.05, 0.15, 0.1]) and v["ci_low"] == pytest.approx(0.035, abs=1e-3)
    assert "beats scratch" in v["verdict"]
