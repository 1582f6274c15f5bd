"""PatchCore, its metrics and the MVTec-AD reader: small synthetic data, plus the real magnetic tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from selfsup.data.mvtec import load_mvtec, mask_path
from selfsup.encoders.vit import vit
from selfsup.evaluate.anomaly import (
    PatchCore,
    anomaly_records,
    auroc,
    coreset,
    gaussian_blur,
    image_auroc,
    patch_features,
    pixel_auroc,
    pixel_patch_features,
    vit_block_tokens,
)

MAGNETIC_TILE = Path(__file__).parents[1].parent / "shared" / "data" / "magnetic_tile"


def tiny_vit(size: int = 32, patch: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return vit("custom", img_size=size, patch_size=patch, in_chans=1, width=32, depth=2, heads=2)


def textures(n: int, size: int = 32, defect: bool = False, seed: int = 0):
    """Grey noise textures uint8 (n, 1, size, size); with ``defect`` a bright 6x6 square and its mask."""
    g = torch.Generator().manual_seed(seed)
    x = (110 + 25 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 255)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    if defect:
        for i in range(n):
            r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
            x[i, :, r : r + 6, c : c + 6] = 240
            masks[i, r : r + 6, c : c + 6] = True
    return x.to(torch.uint8), masks


@pytest.fixture(scope="module")
def synthetic():
    train, _ = textures(40, seed=0)
    good, good_masks = textures(16, seed=1)
    bad, bad_masks = textures(16, defect=True, seed=2)
    images = torch.cat([good, bad])
    labels = torch.cat([torch.zeros(16), torch.ones(16)]).long()
    return train, images, labels, torch.cat([good_masks, bad_masks])


# ----------------------------------------------------------------------------- coreset


def greedy_reference(x: torch.Tensor, n: int, start: int) -> list[int]:
    """Textbook k-center greedy, one full distance pass per pick."""
    chosen, min_d = [start], ((x - x[start]) ** 2).sum(1)
    for _ in range(n - 1):
        min_d[chosen] = -1
        chosen.append(int(min_d.argmax()))
        min_d = torch.minimum(min_d, ((x - x[chosen[-1]]) ** 2).sum(1))
    return chosen


def coverage(x: torch.Tensor, idx: torch.Tensor) -> float:
    """Largest distance from any row to its nearest chosen row."""
    return torch.cdist(x, x[idx]).min(dim=1).values.max().item()


def test_coreset_covers_better_than_random_and_picks_are_distinct():
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(20, 16, generator=g)
    x = centres[torch.randint(20, (3000,), generator=g)] + torch.randn(3000, 16, generator=g)
    for proj_dim in (None, 8):
        idx = coreset(x, 60, seed=0, proj_dim=proj_dim, batch=16)
        assert len(idx) == 60 and len(set(idx.tolist())) == 60
        random = torch.randperm(3000, generator=g)[:60]
        assert coverage(x, idx) <= coverage(x, random)
    assert len(coreset(x, 0.1)) == 300 and len(coreset(x, 1.0)) == 3000


def test_batched_coreset_is_the_exact_greedy():
    x = torch.randn(1500, 12, generator=torch.Generator().manual_seed(1))
    idx = coreset(x, 100, seed=3, proj_dim=None, batch=8)
    assert set(idx.tolist()) == set(greedy_reference(x, 100, int(idx[0])))


def test_coreset_of_duplicates_stays_distinct():
    x = torch.zeros(50, 4)
    x[:5] = torch.eye(4, 4).repeat(2, 1)[:5]
    idx = coreset(x, 20, proj_dim=None)
    assert len(set(idx.tolist())) == 20


# ----------------------------------------------------------------------------- metrics


def test_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    for n in (10, 500):
        y = rng.integers(0, 2, n)
        s = rng.normal(size=n) + y
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        ties = np.round(s, 1)  # many tied scores
        assert image_auroc(y, ties) == pytest.approx(roc_auc_score(y, ties), abs=1e-12)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = rng.random((3, 8, 8)) + masks
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    sub = pixel_auroc(masks, maps, max_pixels=100)
    assert 0.5 < sub <= 1.0
    assert np.isnan(auroc(np.zeros(5), np.arange(5)))


def test_gaussian_blur_keeps_constants_and_mass():
    assert torch.allclose(gaussian_blur(torch.full((2, 9, 9), 3.0), 4.0), torch.full((2, 9, 9), 3.0))
    spike = torch.zeros(1, 65, 65)
    spike[0, 32, 32] = 1.0
    out = gaussian_blur(spike, 2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out[0, 32, 32] == out.max()


# ----------------------------------------------------------------------------- features


def test_feature_shapes_and_block_loop_matches_the_encoder():
    enc = tiny_vit().eval()
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    assert patch_features(enc, images, layers=(0, 1)).shape == (3, 8, 8, 64)
    assert patch_features(enc, images, layers=(1,), aggregate=False).shape == (3, 8, 8, 32)
    with pytest.raises(ValueError, match="not blocks"):
        patch_features(enc, images, layers=(2,))
    assert pixel_patch_features(images, 4).shape == (3, 8, 8, 9 * 16)
    assert pixel_patch_features(images, 4, neighbourhood=False).shape == (3, 8, 8, 16)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        last = vit_block_tokens(enc, x, (1,))[0].reshape(2, 64, 32)
        assert torch.allclose(last, enc.forward_features(x)[:, 1:], atol=1e-5)  # norm is still identity


# ----------------------------------------------------------------------------- PatchCore


@pytest.mark.parametrize("backbone", ["pixels", "vit"])
def test_patchcore_finds_bright_squares(synthetic, backbone):
    train, images, labels, masks = synthetic
    encoder = tiny_vit() if backbone == "vit" else None
    model = PatchCore(pixel_patch=4, coreset_size=0.25).fit(encoder, train)
    scores, heatmaps = model.score(images)
    assert scores.shape == (32,) and heatmaps.shape == (32, 32, 32)
    assert image_auroc(labels, scores) > 0.9
    assert pixel_auroc(masks, heatmaps) > 0.8


def test_patchcore_reweighting_keeps_the_ranking_sane(synthetic):
    train, images, labels, _ = synthetic
    scores, _ = PatchCore(pixel_patch=4, coreset_size=0.25, reweight=3).fit(None, train).score(images)
    assert image_auroc(labels, scores) > 0.9


@pytest.mark.parametrize("backbone", ["pixels", "vit"])
def test_save_load_round_trip(synthetic, tmp_path, backbone):
    train, images, _, _ = synthetic
    encoder = tiny_vit() if backbone == "vit" else None
    model = PatchCore(pixel_patch=4, coreset_size=50, layers=(1,) if encoder else None).fit(encoder, train)
    model.save(tmp_path / "bank.safetensors")
    loaded = PatchCore.load(tmp_path / "bank.safetensors", encoder=encoder)
    assert loaded.config() == model.config()
    for a, b in zip(model.score(images[:6]), loaded.score(images[:6]), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="fitted on"):
        PatchCore.load(tmp_path / "bank.safetensors", encoder=None if encoder else tiny_vit())


def test_anomaly_records_one_per_defect_and_overall():
    class Fake:
        labels = torch.tensor([0, 0, 1, 1, 1])
        defect = ["good", "good", "crack", "crack", "hole"]
        masks = torch.zeros(5, 4, 4, dtype=torch.bool)

    Fake.masks[2:, 1, 1] = True
    maps = torch.rand(5, 4, 4, generator=torch.Generator().manual_seed(0)) + 2 * Fake.masks
    recs = anomaly_records("tiles", Fake, torch.tensor([0.1, 0.2, 0.9, 0.15, 0.8]), maps, "raw")
    assert [(r["defect"], r["metric"]) for r in recs] == [
        (d, m) for d in ("all", "crack", "hole") for m in ("image_auroc", "pixel_auroc")
    ]
    by = {(r["defect"], r["metric"]): r for r in recs}
    assert by[("hole", "image_auroc")]["mean"] == 1.0 and by[("crack", "image_auroc")]["mean"] == 0.75
    assert by[("all", "pixel_auroc")]["mean"] == 1.0
    r = by[("all", "image_auroc")]
    assert r["protocol"] == "anomaly" and r["encoder"] == "raw" and r["n_seeds"] == 1 and r["std"] == 0.0


# ----------------------------------------------------------------------------- MVTec-AD reader


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_load_mvtec_fake_layout(tmp_path):
    for i in range(3):
        _png(tmp_path / "train/good" / f"n{i}.png", np.full((20, 40), 100 + i, np.uint8))
    _png(tmp_path / "test/good/g0.png", np.full((30, 30), 90, np.uint8))
    for name, row in (("a1", 0), ("a2", 10)):  # each mask marks a different band, found by name
        _png(tmp_path / "test/scratch" / f"{name}.png", np.full((20, 20), 50, np.uint8))
        mask = np.zeros((20, 20), np.uint8)
        mask[row : row + 10] = 255
        _png(tmp_path / "ground_truth/scratch" / f"{name}_mask.png", mask)
    _png(tmp_path / "test/scratch/a3.png", np.full((20, 20), 50, np.uint8))  # no mask
    (tmp_path / "test/scratch/broken.png").write_bytes(b"not a png")

    train = load_mvtec(tmp_path, "train", image_size=16)
    assert train.images.shape == (3, 1, 16, 16) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 0] and not train.masks.any()
    assert load_mvtec(tmp_path, "train", image_size=16, max_per_class=2).images.shape[0] == 2
    assert load_mvtec(tmp_path, "train", image_size=8, channels=3).images.shape == (3, 3, 8, 8)

    with pytest.warns(UserWarning):
        test = load_mvtec(tmp_path, "test", image_size=16)
    assert test.defect == ["good", "scratch", "scratch", "scratch"]
    assert test.labels.tolist() == [0, 1, 1, 1]
    assert [Path(p).name for p in test.paths] == ["g0.png", "a1.png", "a2.png", "a3.png"]
    assert [Path(p).name for p in test.skipped] == ["broken.png"]
    assert [Path(p).name for p in test.missing_masks] == ["a3.png"]
    assert test.masks.shape == (4, 16, 16) and test.masks.dtype == torch.bool
    assert not test.masks[0].any() and not test.masks[3].any()
    assert test.masks[1, :8].all() and not test.masks[1, 8:].any()
    assert test.masks[2, 8:].all() and not test.masks[2, :8].any()
    assert test.defect_types == ["scratch"] and test.spec.image_size == 16


def test_load_mvtec_real_magnetic_tiles():
    if not MAGNETIC_TILE.is_dir():
        pytest.skip(f"magnetic tile data not found at {MAGNETIC_TILE} (see ../shared/data/README.md)")
    test = load_mvtec(MAGNETIC_TILE, "test", image_size=64, max_per_class=2)
    assert test.defect_types == ["blowhole", "break", "crack", "fray", "uneven"]
    assert test.images.shape == (12, 1, 64, 64) and not test.skipped and not test.missing_masks
    for i, path in enumerate(map(Path, test.paths)):
        assert test.labels[i] == int(test.defect[i] != "good") and path.parent.name == test.defect[i]
        if test.defect[i] == "good":
            assert not test.masks[i].any()
            continue
        mask_file = mask_path(MAGNETIC_TILE, test.defect[i], path)
        with Image.open(path) as im, Image.open(mask_file) as m:
            assert im.size == m.size
            expected = np.asarray(m.convert("L").resize((64, 64), Image.NEAREST)) > 0
        assert test.masks[i].any() and np.array_equal(test.masks[i].numpy(), expected)
