"""Table and series methods: losses against hand-computed values and direct formulas, the `mae`
name resolving by modality, and a short run through the training engine."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.config import load_config
from selfsup.data.sources.table import TableSource, read_table
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.tabular import masked_feature_loss
from selfsup.encoders.trunk import masked_mse
from selfsup.methods import build_method
from selfsup.methods.mae import MAE
from selfsup.methods.scarf import SCARF, corrupt, scarf_loss
from selfsup.methods.ts2vec import (
    TS2Vec,
    hierarchical_contrastive_loss,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)

NAN = float("nan")
ENC = EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8)
DEC = {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}
TABLE = InputSpec(modality="table", num_features=2, cardinalities=[3])
SERIES = InputSpec(modality="series", channels=2, series_length=64)


def t64(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


# --- masked modelling ----------------------------------------------------------------------------


def test_masked_feature_loss_by_hand():
    num_pred, num_target = t64([[1.0, 5.0], [2.0, 0.0]]), t64([[0.0, NAN], [0.0, 9.0]])
    logits = [t64([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])]
    cat_target = torch.tensor([[2], [0]])  # row 1's category is missing: never a target
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])  # row 1, column 1 is visible
    loss, errors = masked_feature_loss(num_pred, num_target, logits, cat_target, mask)
    # counted: (0, 0) error 1; (0, 2) cross-entropy log 3; (1, 0) error 4
    assert math.isclose(loss.item(), (1.0 + math.log(3.0) + 4.0) / 3, rel_tol=1e-12)
    assert torch.isnan(errors[0, 1]) and torch.isnan(errors[1, 1]) and torch.isnan(errors[1, 2])


def test_masked_patch_loss_by_hand():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, NAN], [5.0, 5.0], [2.0, 2.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # patch 1 is visible: its error does not count
    loss, errors = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 4 + 4) / 3)
    assert errors[0, 0].item() == 1.0 and torch.isnan(errors[0, 1]) and errors[0, 2].item() == 4.0


def test_one_mae_for_every_data_type_with_the_tokenizers_mask_ratio():
    image = build_method("mae", DEC, ENC.model_copy(update={"patch_size": 4}), InputSpec(channels=1, image_size=8))
    table, series = build_method("mae", DEC, ENC, TABLE), build_method("mae", {}, ENC, SERIES)
    assert type(image) is MAE and type(table) is MAE and type(series) is MAE
    assert (image.cfg.mask_ratio, table.mask_ratio, series.mask_ratio) == (0.75, 0.3, 0.4)
    assert build_method("mae", {"mask_ratio": 0.5}, ENC, SERIES).mask_ratio == 0.5
    assert load_config(overrides=["method.name=mae"]).method["mask_ratio"] is None  # resolved per modality
    with pytest.raises(ValueError, match="non-overlapping"):
        build_method("mae", {}, ENC.model_copy(update={"series_stride": 4}), SERIES)


def test_series_mae_hides_40_percent_of_each_channel_and_never_scores_padding():
    torch.manual_seed(0)
    m = build_method("mae", {}, ENC, SERIES)
    x = torch.randn(4, 2, 80)
    x[0, :, 40:] = NAN  # a shorter series, padded
    out = m({"series": x})
    assert out["pred"].shape == (8, 10, 8) and torch.isfinite(out["loss"])  # (B * C, patches, steps)
    assert out["mask"].sum(-1).eq(4).all()  # 40 % of 10 patches per channel
    assert torch.isnan(out["errors"][:2, 5:]).all()  # padding is never a target
    errors = m.reconstruction_errors({"series": x}, passes=4)
    assert errors.shape == (4, 20)  # per series: each channel's 10 patches
    assert torch.isnan(errors[0].reshape(2, 10)[:, 5:]).all() and torch.isfinite(errors[1:].nanmean(1)).all()


def test_image_mae_gives_per_patch_reconstruction_errors():
    torch.manual_seed(0)
    m = build_method("mae", DEC, ENC.model_copy(update={"patch_size": 4}), InputSpec(channels=1, image_size=8)).eval()
    errors = m.reconstruction_errors({"image": torch.rand(3, 1, 8, 8)}, passes=6)
    assert errors.shape == (3, 4) and torch.isfinite(errors.nanmean(1)).all() and (errors[~errors.isnan()] >= 0).all()


def test_table_mae_learns_a_column_that_copies_another():
    torch.manual_seed(0)
    m = build_method("mae", {**DEC, "mask_ratio": 0.34}, ENC, TABLE)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        a = torch.randn(64)
        batch = {"features": torch.stack([a, -a], 1), "categories": (a > 0).long()[:, None] + 1}
        loss = m(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # each hidden column is a function of a visible one: the error falls far below the variance (1)
    assert losses[0] > 0.8 and np.mean(losses[-20:]) < 0.2
    errors = m.reconstruction_errors(batch, passes=6)
    assert errors.shape == (64, 3) and np.nanmean(errors.numpy()) < 0.3


# --- SCARF ---------------------------------------------------------------------------------------


def scarf_direct(z: np.ndarray, zc: np.ndarray, tau: float) -> float:
    """Bahri et al. 2022, eq. 1, written out."""
    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    total = 0.0
    for i in range(len(z)):
        denom = sum(math.exp(cos(z[i], zc[k]) / tau) for k in range(len(z)))
        total += -math.log(math.exp(cos(z[i], zc[i]) / tau) / denom)
    return total / len(z)


def test_scarf_loss_by_hand_and_against_the_formula():
    eye = t64([[1.0, 0.0], [0.0, 1.0]])  # positive at cosine 1, one negative at 0: log(1 + 1/e)
    assert math.isclose(scarf_loss(eye, eye, 1.0).item(), math.log(1 + 1 / math.e), rel_tol=1e-12)
    rng = np.random.default_rng(0)
    z, zc = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    assert math.isclose(scarf_loss(t64(z), t64(zc), 0.5).item(), scarf_direct(z, zc, 0.5), rel_tol=1e-10)


def test_corruption_replaces_a_fixed_share_with_values_from_each_columns_marginal():
    g = torch.Generator().manual_seed(0)
    x_num, x_cat = torch.zeros(50, 3), torch.zeros(50, 2, dtype=torch.long)
    pool_num = torch.arange(1, 31, dtype=torch.float32).reshape(10, 3)  # column j holds values = j + 1 (mod 3)
    pool_cat = torch.arange(1, 21).reshape(10, 2)
    c_num, c_cat, chosen = corrupt(x_num, x_cat, 0.6, pool_num, pool_cat, generator=g)
    assert chosen.sum(1).eq(3).all()  # round(0.6 * 5) columns in every row
    assert torch.equal(c_num != 0, chosen[:, :3]) and torch.equal(c_cat != 0, chosen[:, 3:])
    assert ((c_num[chosen[:, :3]] - 1) % 3 == torch.nonzero(chosen[:, :3])[:, 1]).all()
    assert ((c_cat[chosen[:, 3:]] - 1) % 2 == torch.nonzero(chosen[:, 3:])[:, 1]).all()


def test_scarf_uses_the_training_marginals_once_prepared(tmp_path: Path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,c\n" + "".join(f"{i},{i % 3},{'xyz'[i % 3]}\n" for i in range(30)))
    src = TableSource(read_table(p, target=""))
    m = build_method("scarf", {"proj_hidden": 8, "proj_dim": 4}, ENC, src.spec)
    assert isinstance(m, SCARF)
    m.prepare(src, tmp_path)
    assert m._pool[0].shape == (30, 2) and m._pool[1].shape == (30, 1)
    out = m(next(iter(src.loader(8))))
    assert torch.isfinite(out["loss"]) and "scarf" not in json.dumps(list(m.state_dict()))


# --- TS2Vec ----------------------------------------------------------------------------------------


def instance_direct(z1: np.ndarray, z2: np.ndarray) -> float:
    """Eq. 3 of Yue et al. 2022 over both views' anchors, written out."""
    B, T, _ = z1.shape
    views, total, n = (z1, z2), 0.0, 0
    for t in range(T):
        for v in (0, 1):
            for i in range(B):
                a = views[v][i, t]
                pos = math.exp(a @ views[1 - v][i, t])
                denom = sum(math.exp(a @ views[1 - v][j, t]) for j in range(B))
                denom += sum(math.exp(a @ views[v][j, t]) for j in range(B) if j != i)
                total += -math.log(pos / denom)
                n += 1
    return total / n


def temporal_direct(z1: np.ndarray, z2: np.ndarray) -> float:
    """Eq. 2 of Yue et al. 2022 over both views' anchors, written out."""
    return instance_direct(z1.transpose(1, 0, 2), z2.transpose(1, 0, 2))


def test_ts2vec_terms_by_hand():
    # two instances, one step, one dimension: z1 = (1, 0), z2 = (1, 0)
    z1, z2 = t64([[[1.0]], [[0.0]]]), t64([[[1.0]], [[0.0]]])
    # anchor z1_0 = 1: positive z2_0 (sim 1), negatives z2_1 (0) and z1_1 (0): -log(e / (e + 2))
    # anchor z1_1 = 0: every similarity is 0: -log(1 / 3); the views are the same, so the mean is
    expected = (math.log(1 + 2 / math.e) + math.log(3)) / 2
    assert math.isclose(instance_contrastive_loss(z1, z2).item(), expected, rel_tol=1e-12)
    assert temporal_contrastive_loss(z1, z2).item() == 0.0  # one step: no temporal term
    assert instance_contrastive_loss(z1[:1], z2[:1]).item() == 0.0  # one instance: no instance term


def test_ts2vec_terms_and_hierarchy_against_the_formulas():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(3, 4, 2)) * 0.5, rng.normal(size=(3, 4, 2)) * 0.5
    assert math.isclose(instance_contrastive_loss(t64(z1), t64(z2)).item(), instance_direct(z1, z2), rel_tol=1e-10)
    assert math.isclose(temporal_contrastive_loss(t64(z1), t64(z2)).item(), temporal_direct(z1, z2), rel_tol=1e-10)
    # T = 4: scales 4, 2 (both terms), then 1 (instance only); averaged over the 3 scales
    def pool(z):
        return np.maximum(z[:, 0::2], z[:, 1::2])
    a = 0.3
    p1, p2, q1, q2 = pool(z1), pool(z2), pool(pool(z1)), pool(pool(z2))
    want = (a * instance_direct(z1, z2) + (1 - a) * temporal_direct(z1, z2)
            + a * instance_direct(p1, p2) + (1 - a) * temporal_direct(p1, p2) + a * instance_direct(q1, q2)) / 3
    got = hierarchical_contrastive_loss(t64(z1), t64(z2), alpha=a).item()
    assert math.isclose(got, want, rel_tol=1e-10)


def test_ts2vec_method_runs_on_patches():
    torch.manual_seed(0)
    m = build_method("ts2vec", {}, ENC, SERIES)
    assert isinstance(m, TS2Vec)
    out = m({"series": torch.randn(4, 2, 64)}, rng=np.random.default_rng(0))
    assert torch.isfinite(out["loss"]) and 2 <= out["crop_patches"].item() <= 8
    out["loss"].backward()
    assert m.encoder.patch_embed.weight.grad is not None


# --- through the engine, and back from a saved spec --------------------------------------------------


@pytest.mark.parametrize("modality", ["table", "series"])
def test_pretrain_steps_through_the_engine_and_rebuild_from_the_saved_spec(tmp_path: Path, modality: str):
    from selfsup.data.sources.series import SeriesSet, SeriesSource
    from selfsup.train.config import TrainConfig
    from selfsup.train.engine import fit

    if modality == "table":
        p = tmp_path / "t.csv"
        p.write_text("a,b,c,label\n" + "".join(f"{i},{i % 5},{'xyz'[i % 3]},{i % 2}\n" for i in range(40)))
        src = TableSource(read_table(p))
    else:
        x = np.sin(np.linspace(0, 20, 48))[None, None].repeat(40, 0).astype(np.float32) + 0.1
        src = SeriesSource(SeriesSet(x, np.full(40, 48), np.zeros(40, np.int64), [str(i) for i in range(40)]))
    method = build_method("mae", DEC, ENC, src.spec)
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, accelerator="cpu", devices=1, log_every=1)
    module = fit(method, src.loader(8, shuffle=True, infinite=True), cfg, tmp_path / "run", total_steps=3,
                 progress=False)
    assert module.global_step == 3 and all(math.isfinite(v) for _, v in module.loss_history)
    spec = InputSpec(**json.loads(json.dumps(asdict(src.spec))))  # how api.save_encoder stores it
    again = build_encoder(ENC, spec)
    again.load_state_dict(method.encoder.state_dict())
    batch = next(iter(src.loader(4)))
    method.encoder.eval()
    again.eval()
    torch.testing.assert_close(again(batch), method.encoder(batch))
