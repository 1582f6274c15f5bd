"""The run report: a self-contained HTML page, and the maths behind its figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.interpret import attention_rollout, build_report, cls_attention, nearest_neighbours, pca, vit_attention
from selfsup.interpret.figures import plot_label_efficiency, read_loss_history
from selfsup.interpret.report import results_table
from selfsup.methods import build_method

CLASSES = ["top-left", "top-right", "bottom-left", "bottom-right"]


def fake_images(n: int = 48, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 1, size, size): a bright square in one of four quadrants (the label) plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    x = rng.integers(0, 40, size=(n, 1, size, size))
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        x[i, 0, r * h + 2 : r * h + h - 2, q * h + 2 : q * h + h - 2] = 230
    return x.astype(np.uint8), labels


def fake_records() -> list[dict]:
    recs = [
        {"task": "quadrants", "protocol": "pretrain", "encoder": "ssl", "metric": m, "mean": v, "std": 0.0,
         "n_seeds": 1, "method": "mae"}
        for m, v in (("steps", 300.0), ("final_loss", 0.4321), ("images_per_s", 150.0))
    ]
    acc = {"ssl": 0.60, "scratch": 0.45, "raw": 0.50}
    for protocol in ("knn", "linear", "finetune"):
        for enc in ("ssl", "raw") if protocol != "finetune" else ("ssl", "scratch"):
            for k, shots in enumerate((1, 5, 10)):
                recs.append({"task": "quadrants", "protocol": protocol, "encoder": enc, "shots": shots,
                             "metric": "top1", "mean": acc[enc] + 0.1 * k + (0.012 if protocol == "linear" else 0),
                             "std": 0.01 + 0.005 * k, "n_seeds": 3})
    recs.append({"task": "quadrants", "protocol": "finetune", "encoder": "ssl", "baseline": "scratch", "shots": 5,
                 "metric": "top1_difference", "mean": 0.15, "n_seeds": 3, "values": [0.1, 0.15, 0.2],
                 "verdict": "SSL Fine-tuning beats scratch by +0.150 top1 (95 % CI +0.026 to +0.274, 3 draws)"})
    return recs


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    config = {"method": {"name": "mae", "mask_ratio": 0.75}, "encoder": {"name": "vit", "size": "custom",
              "patch_size": 4, "width": 32, "depth": 1, "heads": 2},
              "data": {"path": "digits:train", "image_size": 16, "channels": 1},
              "train": {"steps": 300, "batch_size": 64, "lr": 0.0015}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "metrics.json").write_text(json.dumps(fake_records()))
    (run / "loss_history.json").write_text(json.dumps([[s, 1.0 / (1 + 0.05 * s)] for s in range(0, 300, 10)]))
    torch.manual_seed(0)
    method = build_method("mae", {"decoder_width": 32, "decoder_depth": 1, "decoder_heads": 2},
                          EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=4),
                          InputSpec(channels=1, image_size=16))
    images, labels = fake_images()
    heat = np.random.default_rng(1).random((4, 4, 4)).astype(np.float32)
    masks = np.zeros((4, 16, 16), bool)
    masks[1, 4:10, 4:10] = True
    anomaly = {"images": images[:4], "heatmaps": heat, "masks": masks, "scores": heat.max(axis=(1, 2)),
               "names": ["good", "crack", "good", "crack"]}
    return build_report(run, method=method, images=images, labels=labels, class_names=CLASSES, anomaly=anomaly,
                        title="Test report")


def test_report_is_self_contained_and_complete(report: Path):
    assert report.name == "report.html" and report.exists()
    page = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "external resource in report"
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert len(srcs) == 7 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for heading in ("Summary", "Results", "Verdict", "Label efficiency", "Loss curve", "MAE reconstructions",
                    "Attention maps", "Embedding map", "Nearest neighbours", "Anomaly heatmaps"):
        assert f">{heading}</h2>" in page, heading
    assert "0.600 ± 0.010" in page and "0.612 ± 0.010" in page  # knn ssl 1-shot, linear ssl 1-shot
    assert '<td class="best" title="3 seed(s)">0.800 ± 0.020</td>' in page  # finetune ssl 10-shot beats scratch
    assert "Test report" in page and "final loss 0.4321" in page
    assert "SSL Fine-tuning beats scratch by +0.150 top1" in page and "top1_difference" not in page
    figs = sorted(p.name for p in (report.parent / "figures").glob("*.png"))
    assert figs == sorted(["label_efficiency.png", "loss_curve.png", "mae_reconstructions.png", "attention_maps.png",
                           "embedding_map.png", "nearest_neighbours.png", "anomaly_heatmaps.png"])
    assert all((report.parent / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figs)


def test_sections_follow_their_inputs(tmp_path: Path):
    (tmp_path / "metrics.json").write_text(json.dumps([r for r in fake_records() if r.get("shots") in (None, 5)]))
    page = build_report(tmp_path).read_text()
    assert ">Results</h2>" in page
    for absent in ("Label efficiency", "Loss curve", "MAE reconstructions", "Attention maps", "Embedding map"):
        assert f">{absent}</h2>" not in page, absent
    assert "<img" not in page


def test_loss_history_from_lightning_csv(tmp_path: Path):
    csv_dir = tmp_path / "logs" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("epoch,step,train/loss,lr\n0,9,2.0,\n0,19,,0.001\n0,19,1.5,\n")
    steps, losses = read_loss_history(tmp_path)
    assert steps.tolist() == [9, 19] and losses.tolist() == [2.0, 1.5]
    assert ">Loss curve</h2>" in build_report(tmp_path).read_text()


def test_best_cell_respects_metric_direction():
    recs = [{"task": "t", "protocol": "linear", "encoder": e, "shots": 5, "metric": m, "mean": v, "std": 0.0,
             "n_seeds": 3} for m in ("top1", "error") for e, v in (("ssl", 0.2), ("raw", 0.3))]
    table = results_table(recs)
    assert '<td class="best" title="3 seed(s)">0.300 ± 0.000</td>' in table  # top1: higher wins (raw)
    assert '<td class="best" title="3 seed(s)">0.200 ± 0.000</td>' in table  # error: lower wins (ssl)


def test_label_efficiency_needs_two_budgets():
    one = [r for r in fake_records() if r.get("shots") == 5]
    assert plot_label_efficiency(one) is None
    assert plot_label_efficiency(fake_records())[:4] == b"\x89PNG"


def test_attention_rollout_rows_sum_to_one():
    torch.manual_seed(0)
    maps = [torch.randn(2, 3, 5, 5).softmax(-1) for _ in range(4)]
    roll = attention_rollout(maps)
    assert roll.shape == (2, 5, 5)
    torch.testing.assert_close(roll.sum(-1), torch.ones(2, 5))
    eye = [torch.eye(5).expand(2, 3, 5, 5) for _ in range(3)]  # tokens attending to themselves: no mixing
    torch.testing.assert_close(attention_rollout(eye), torch.eye(5).expand(2, 5, 5))


def test_vit_attention_shapes_on_a_real_encoder():
    method = build_method("mae", {}, EncoderConfig(size="custom", width=32, depth=2, heads=2, patch_size=4),
                          InputSpec(channels=1, image_size=16))
    images, _ = fake_images(3)
    heads, roll = vit_attention(method.encoder, images)
    assert heads.shape == (3, 2, 4, 4) and roll.shape == (3, 4, 4)
    torch.testing.assert_close(roll.sum(dim=(1, 2)), torch.ones(3))
    maps = method.encoder.attention_maps(torch.randn(3, 1, 16, 16))
    torch.testing.assert_close(cls_attention(maps, (4, 4)).sum(dim=(2, 3)), 1 - maps[-1][:, :, 0, 0])


def test_pca_recovers_rank_two_data():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 2)) * np.array([5.0, 1.0])
    x = z @ rng.normal(size=(2, 30)) + rng.normal(size=30)
    coords, ratio = pca(x, 2)
    assert ratio.sum() == pytest.approx(1.0, abs=1e-5)
    zc = z - z.mean(0)
    fit, *_ = np.linalg.lstsq(coords.astype(np.float64), zc, rcond=None)  # coords span the same plane
    np.testing.assert_allclose(coords @ fit, zc, atol=1e-3)
    xc = x - x.mean(0)
    np.testing.assert_allclose((coords.astype(np.float64) ** 2).sum(), (xc**2).sum(), rtol=1e-4)  # nothing lost


def test_nearest_neighbours_by_cosine():
    f = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 1.0], [0.1, 3.0]])
    idx, sim = nearest_neighbours(f, [0, 2], k=2)
    assert idx.tolist() == [[1, 3], [3, 1]]
    assert sim[0, 0] == pytest.approx(10 / np.hypot(10, 0.5), rel=1e-5)
