"""Adaptation: LoRA counts and merging, layer-wise lr decay, the recipe chosen on held-out labels
only, training until the held-out score stops improving, saved classifiers, predictions, and the
label-efficiency curve."""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from selfsup import api
from selfsup.adapt import (
    Classifier,
    FinetuneRecipe,
    adapt_classifier,
    add_lora,
    load_classifier,
    lora_modules,
    merge_lora,
    save_classifier,
)
from selfsup.adapt import finetune as adapt_finetune
from selfsup.adapt import tune as adapt_tune
from selfsup.config import build_config
from selfsup.data.spec import InputSpec
from selfsup.data.splits import stratified_split
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.records import load_records
from selfsup.train.optim import param_groups

TINY = EncoderConfig(size="custom", patch_size=4, width=32, depth=2, heads=2, pool="avg")
SPEC = InputSpec(channels=1, image_size=8)
FAST = FinetuneRecipe(max_steps=60, batch_size=16, eval_every=5, patience=6)


def tiny_vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_encoder(TINY.model_copy(update={"depth": depth}), SPEC)


def halves(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """8x8 grey uint8 images: class 0 has a bright left half, class 1 a bright right half."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    bright = torch.randint(180, 256, (n, 1, 8, 4), generator=g)
    x[y == 0, :, :, :4] = bright[y == 0]
    x[y == 1, :, :, 4:] = bright[y == 1]
    return x.to(torch.uint8), y.numpy()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple:
    """A run folder holding a (random) tiny ViT as its encoder, and halves data as .npz files."""
    root = tmp_path_factory.mktemp("adapt")
    run = root / "run"
    run.mkdir()
    holder = nn.Module()
    holder.encoder = tiny_vit()
    cfg = build_config({"method": {"name": "mae"}, "encoder": TINY.model_dump()})
    api.save_encoder(holder, cfg, SPEC, run)
    for name, n, seed in [("train", 110, 0), ("test", 40, 1)]:
        x, y = halves(n, seed)
        np.savez(root / f"{name}.npz", images=x[:, 0].numpy(), labels=y)
    return run, root


# ---- LoRA ----------------------------------------------------------------------------------------


def test_lora_counts_frozen_base_and_identity_start():
    enc = tiny_vit()
    x = torch.randn(3, 1, 8, 8)
    before = enc(x)
    add_lora(enc, rank=4, alpha=8)
    adapted = lora_modules(enc)
    assert adapted == [f"blocks.{i}.attn.{t}" for i in range(2) for t in ("qkv", "proj")]  # not patch_embed.proj
    expected = sum(4 * (m.in_features + m.out_features) for m in (enc.get_submodule(n).base_layer for n in adapted))
    model = Classifier(enc, 3)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected + 32 * 3 + 3  # r (in + out) per adapted Linear, plus the head
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert not any(p.requires_grad for n, p in enc.named_parameters() if "lora_" not in n)
    torch.testing.assert_close(enc(x), before)  # B = 0: the adapted encoder starts as the pretrained one


def test_lora_merged_equals_unmerged():
    enc = add_lora(tiny_vit(), rank=4, alpha=8)
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x = torch.randn(5, 1, 8, 8)
    merged = merge_lora(copy.deepcopy(enc))
    assert lora_modules(merged) == [] and type(merged.blocks[0].attn.qkv) is nn.Linear
    assert not torch.allclose(merged(x), tiny_vit()(x), atol=1e-3)  # the update is really in the weights
    torch.testing.assert_close(merged(x), enc(x), atol=1e-5, rtol=1e-5)


# ---- layer-wise lr decay -------------------------------------------------------------------------


def test_llrd_scales(monkeypatch):
    depth, decay, lr = 3, 0.5, 0.1
    model = Classifier(tiny_vit(depth), 2)
    scale = {id(p): g["lr_scale"] for g in param_groups(model, 0.05, decay) for p in g["params"]}
    for name, p in model.named_parameters():
        if name.startswith("encoder.blocks."):
            i = int(name.split(".")[2])
            assert scale[id(p)] == pytest.approx(decay ** (depth - i)), name
        elif name.startswith(("head.", "encoder.norm.")):
            assert scale[id(p)] == 1.0, name
        elif p.requires_grad:  # patch embedding and CLS token: below block 0
            assert scale[id(p)] == pytest.approx(decay ** (depth + 1)), name
    # and the training loop applies them: at step 0 with no warmup every group runs at lr * scale
    made = []

    class Spy(torch.optim.AdamW):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    x, y = halves(8)
    recipe = FinetuneRecipe(lr=lr, batch_size=4, warmup_steps=0, layer_decay=decay)
    adapt_finetune.train_classifier(model, x, torch.from_numpy(y), recipe, generator=torch.Generator(), steps=1)
    lrs = sorted({round(g["lr"] / lr, 6) for g in made[0].param_groups})
    assert lrs == [round(decay**k, 6) for k in range(depth + 1, -1, -1)]
    assert all(g["lr"] == pytest.approx(lr * g["lr_scale"]) for g in made[0].param_groups)


# ---- early stopping on held-out labels only ------------------------------------------------------


def test_holdout_split_is_stratified_and_keeps_singletons():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(len(labels)))
    assert [int((labels[val] == c).sum()) for c in range(4)] == [2, 1, 1, 0]  # >= 1 when a class has 2
    assert 17 in train  # a lone label trains


def test_recipe_is_chosen_on_the_labelled_set_only(monkeypatch):
    """adapt_classifier takes no test set; every lr candidate trains on one part of its labels and
    validates on the rest; the final model is re-trained on all of them for the chosen length."""
    calls = []
    real = adapt_tune.train_classifier

    def spy(model, images, labels, recipe, *, generator, val=None, steps=None):
        calls.append((images.clone(), None if val is None else val[0].clone(), recipe.lr, steps))
        return real(model, images, labels, recipe, generator=generator, val=val, steps=steps)

    monkeypatch.setattr(adapt_tune, "train_classifier", spy)
    x, y = halves(20)
    x[:, 0, 0, 0] = torch.arange(20, dtype=torch.uint8)  # tag each labelled image
    recipe = replace(FAST, val_fraction=0.3)
    model, info = adapt_classifier(tiny_vit(), x, y, 2, recipe=recipe, seed=0)
    *candidates, final = calls
    assert [c[2] for c in candidates] == pytest.approx([recipe.lr * m for m in recipe.lr_grid])
    for train_x, val_x, _, steps in candidates:
        train_tags, val_tags = set(train_x[:, 0, 0, 0].tolist()), set(val_x[:, 0, 0, 0].tolist())
        assert not train_tags & val_tags and train_tags | val_tags == set(range(20)) and steps is None
        assert len(val_tags) == info["n_val"] == 6
    assert final[1] is None and final[0].shape[0] == 20 and final[2] == info["lr"] and final[3] == info["steps"]
    best = max(info["grid"], key=lambda c: (c["val_top1"], -c["val_loss"]))
    assert info["lr"] == best["lr"] and info["val_top1"] == best["val_top1"]
    # the length re-trained on all 20 labels is the best candidate's in epochs: 14 labels take a
    # step an epoch at batch 16, 20 labels 20 / 16 steps
    assert info["steps"] == max(1, round(best["best_step"] * 20 / 16))


def test_early_stopping_stops_when_held_out_score_stalls():
    x, y = halves(20)
    recipe = FinetuneRecipe(max_steps=400, batch_size=16, lr=0.0, eval_every=2, patience=3, min_steps=0)  # lr 0
    model = Classifier(tiny_vit(), 2)
    val = (x[:6], torch.from_numpy(y[:6]))
    fit = adapt_finetune.train_classifier(model, x[6:], torch.from_numpy(y[6:]), recipe,
                                          generator=torch.Generator(), val=val)
    assert fit["steps"] == 8 and fit["best_step"] == 2 and fit["stopped"] == "patience"


@pytest.mark.parametrize("seed", [0, 1])
def test_training_length_grows_with_what_it_takes(monkeypatch, seed):
    """No fixed step count: a run stops ``patience`` validation periods after its held-out score last
    improved, so a task whose score keeps improving longer gets more steps, up to the cap.

    The held-out score is scripted (it improves until step ``needs`` and is flat after), so the step
    counts are exact for every seed; the training itself is real and seeded (model, batches)."""
    x, y = halves(40)
    val = (x[:10], torch.from_numpy(y[:10]))
    recipe = FinetuneRecipe(lr=3e-3, batch_size=16, eval_every=5, patience=4, min_steps=0, max_steps=100)
    steps = {}
    for needs in (20, 60, 400):
        calls = []

        def scripted(model, images, labels, precision="auto", calls=calls, needs=needs):
            calls.append(None)
            at = 5 * len(calls)  # the step this validation follows
            return 0.5, 1.0 / min(at, needs)  # val loss falls until step `needs`, then stays

        monkeypatch.setattr(adapt_finetune, "_validate", scripted)
        torch.manual_seed(seed)
        model = Classifier(build_encoder(TINY, SPEC), 2)
        fit = adapt_finetune.train_classifier(model, x[10:], torch.from_numpy(y[10:]), recipe,
                                              generator=torch.Generator().manual_seed(seed), val=val)
        steps[needs] = (fit["best_step"], fit["steps"], fit["stopped"])
    assert steps[20] == (20, 40, "patience"), steps
    assert steps[60] == (60, 80, "patience"), steps
    assert steps[400] == (100, 100, "cap"), steps


def test_one_label_per_class_trains_until_the_training_loss_stalls():
    x, y = halves(2)
    model, info = adapt_classifier(tiny_vit(), x, y, 2, recipe=replace(FAST, max_steps=500), seed=0)
    assert info["n_val"] == 0 and info["val_top1"] is None and info["selection"].startswith("none")
    assert info["lr"] == FAST.lr and 0 < info["steps"] < 500


# ---- separating a synthetic task -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_adapt_separates_halves(method):
    x, y = halves(24)
    xt, yt = halves(200, seed=1)
    recipe = replace(adapt_finetune.ADAPT_RECIPES[method], max_steps=300, batch_size=16, eval_every=5)
    model, info = adapt_classifier(tiny_vit(), x, y, 2, method=method, recipe=recipe, seed=0)
    acc = (model.predict_proba(xt).argmax(1).numpy() == yt).mean()
    assert acc > 0.85, (method, acc, info["val_top1"])


# ---- saved classifiers, predictions, CLI ---------------------------------------------------------


@pytest.mark.parametrize("method,merge", [("finetune", True), ("lora", False), ("lora", True)])
def test_save_load_round_trip(tmp_path, method, merge):
    x, y = halves(20)
    model, info = adapt_classifier(tiny_vit(), x, y, 2, method=method,
                                   recipe=FinetuneRecipe(max_steps=10, batch_size=8), seed=0)
    out = save_classifier(model, tmp_path / "m", spec=SPEC, encoder_config=TINY, class_names=["left", "right"],
                          merge=merge, info=info)
    loaded, config = load_classifier(out)
    assert config["class_names"] == ["left", "right"] and config["method"] == method
    assert json.loads((out / "classifier.json").read_text())["encoder_config"] == TINY.model_dump()
    assert bool(lora_modules(loaded)) == (method == "lora" and not merge)
    xt, _ = halves(30, seed=1)
    if method == "lora" and merge:
        torch.testing.assert_close(loaded.predict_proba(xt), model.predict_proba(xt), atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(loaded.predict_proba(xt), model.predict_proba(xt))


def test_cli_adapt_then_predict_csv(tiny_run, tmp_path):
    run, root = tiny_run
    from selfsup.cli import app

    runner = CliRunner()
    model_dir = tmp_path / "lora"
    res = runner.invoke(app, ["adapt", str(run), "--data", str(root / "train.npz"), "--shots", "5",
                              "--protocol", "lora", "--max-steps", "20", "--out", str(model_dir), "--no-merge",
                              "--test-data", str(root / "test.npz"), "--json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output.strip().splitlines()[-1])
    assert {r["metric"] for r in recs} == {"selection_top1", "top1", "auroc"}
    assert all(r["protocol"] == "lora" and r["shots"] == 5 for r in recs)
    selection = next(r for r in recs if r["metric"] == "selection_top1")
    assert selection["n_val"] == 2 and "not a test score" in selection["split"]
    assert next(r for r in recs if r["metric"] == "top1")["n_test"] == 40
    # test data that holds the labelled images is refused before any training
    res = runner.invoke(app, ["adapt", str(run), "--data", str(root / "train.npz"), "--shots", "5",
                              "--test-data", str(root / "train.npz"), "--out", str(tmp_path / "leak")])
    assert res.exit_code != 0 and "share" in str(res.exception) and not (tmp_path / "leak").exists()
    # unlabelled images, one of them unreadable
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    images, _ = halves(6, seed=2)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy()).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    preds = tmp_path / "preds.csv"
    res = runner.invoke(app, ["predict", str(model_dir), "--data", str(folder), "--out", str(preds), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["n"] == 6 and summary["skipped"] == 1 and summary["accuracy"] is None
    rows = list(csv.DictReader(preds.open()))
    assert list(rows[0]) == ["key", "pred", "pred_name", "prob_0", "prob_1"] and len(rows) == 6
    assert sorted(r["key"].rsplit("/", 1)[-1] for r in rows) == [f"img{i}.png" for i in range(6)]
    for r in rows:
        p = [float(r["prob_0"]), float(r["prob_1"])]
        assert sum(p) == pytest.approx(1, abs=1e-4) and int(r["pred"]) == int(np.argmax(p))
        assert r["pred_name"] == r["pred"]  # no class names in an .npz: the names are the indices


def test_api_adapt_label_fraction_default_folder(tiny_run):
    run, root = tiny_run
    model_dir = api.adapt(run, str(root / "train.npz"), label_fraction=0.2, recipe=FinetuneRecipe(max_steps=5),
                          log=lambda m: None)
    assert model_dir == run / "classifiers" / "finetune-20pct-seed0"
    config = json.loads((model_dir / "classifier.json").read_text())
    assert config["label_fraction"] == 0.2 and config["n_labels"] == 22 and config["n_train"] + config["n_val"] == 22
    assert config["recipe"]["max_steps"] == 5 and config["lora"] is None and config["steps"] <= 5
    with pytest.raises(ValueError, match="not both"):
        api.adapt(run, str(root / "train.npz"), shots=1, label_fraction=0.2)


# ---- the label-efficiency curve ------------------------------------------------------------------


def test_evaluate_curve_cli_writes_every_protocol_and_budget(tiny_run, monkeypatch):
    run, root = tiny_run
    from selfsup.cli import app

    real = api.evaluate_curve  # a cap of 3 steps keeps the test fast
    fast = FinetuneRecipe(max_steps=3, batch_size=8)
    monkeypatch.setattr(api, "evaluate_curve", lambda *a, **k: real(*a, recipe=fast, **k))
    res = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(root / "test.npz"), "--train-data",
                                   str(root / "train.npz"), "--curve", "--json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output.strip().splitlines()[-1])
    budgets = [("shots", k) for k in (1, 5, 10, 50)] + [("label_fraction", 1.0)]
    combos = {("knn", "ssl"), ("knn", "raw"), ("linear", "ssl"), ("linear", "raw"), ("finetune", "ssl"),
              ("finetune", "scratch"), ("lora", "ssl")}
    got = {(r["protocol"], r["encoder"], kind, r[kind]) for r in recs for kind in ("shots", "label_fraction")
           if r.get(kind) is not None and r["metric"] == "top1"}
    assert got == {(p, e, kind, v) for p, e in combos for kind, v in budgets}
    assert all(r["n_seeds"] == (5 if r["protocol"] in ("knn", "linear") else 3) for r in recs)
    assert {r["metric"] for r in recs} == {"top1", "auroc", "top1_difference"}
    assert {(r["protocol"], r["baseline"]) for r in recs if r.get("baseline")} == {
        ("knn", "raw"), ("linear", "raw"), ("finetune", "scratch")}
    assert len(load_records(run / "metrics.json")) >= len(recs)
    png = (run / "figures" / "label_efficiency.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_adapt_method_is_a_deprecated_spelling_of_protocol(tiny_run, tmp_path):
    """`--method` is the pretraining objective everywhere else; adapt calls its mode `--protocol`
    and still takes `--method` for one release, with a warning."""
    run, root = tiny_run
    from selfsup.cli import app

    res = CliRunner().invoke(app, ["adapt", str(run), "--data", str(root / "train.npz"), "--method", "bogus"])
    assert "deprecated" in res.output and "--protocol" in res.output
    assert isinstance(res.exception, ValueError) and "unknown --protocol 'bogus'" in str(res.exception)
    assert "--method" not in CliRunner().invoke(app, ["adapt", "--help"]).output  # hidden
    with pytest.warns(DeprecationWarning, match="protocol"), pytest.raises(ValueError):
        api.adapt(run, str(root / "train.npz"), shots=1, label_fraction=0.5, method="lora")
