"""`selfsup anomaly fit` / `score` end to end through the CLI, on a tiny synthetic MVTec-AD layout."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from selfsup.cli import app
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.anomaly import standardize_images

SIZE = 32


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.clip(110 + 20 * rng.standard_normal(shape), 0, 255)


def write_mvtec(root: Path) -> dict[str, int]:
    """train/good (16), test/good (6), test/bright and test/dark (4 each, 8x8 squares), masks.

    Images are 40x32 (not square) so the whole-image resize to 32x32 is exercised."""
    rng = np.random.default_rng(0)
    shape = (40, 32)
    counts = {"good": 6, "bright": 4, "dark": 4}
    for i in range(16):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(rng, shape).astype(np.uint8)).save(root / "train" / "good" / f"{i:03d}.png")
    for defect, n in counts.items():
        (root / "test" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = texture(rng, shape)
            if defect != "good":
                r, c = rng.integers(4, shape[0] - 12), rng.integers(4, shape[1] - 12)
                img[r : r + 8, c : c + 8] = 250 if defect == "bright" else 5
                mask = np.zeros(shape, dtype=np.uint8)
                mask[r : r + 8, c : c + 8] = 255
                (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "ground_truth" / defect / f"{i:03d}_mask.png")
            Image.fromarray(img.astype(np.uint8)).save(root / "test" / defect / f"{i:03d}.png")
    return counts


def write_run(run: Path) -> None:
    """A run folder holding only a tiny ViT's ``encoder.safetensors`` (weights + config metadata)."""
    torch.manual_seed(0)
    cfg = EncoderConfig(size="custom", width=32, depth=2, heads=2, patch_size=4)
    spec = InputSpec(modality="image", channels=1, image_size=SIZE)
    enc = build_encoder(cfg, spec)
    run.mkdir(parents=True)
    meta = {"encoder_config": cfg.model_dump_json(), "input_spec": json.dumps(asdict(spec))}
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(run / "encoder.safetensors"), metadata=meta)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("mvtec") / "toy"
    return root, write_mvtec(root)


def test_fit_and_score_with_a_run_encoder(mvtec, tmp_path):
    root, counts = mvtec
    run = tmp_path / "run"
    write_run(run)
    fit = cli("anomaly", "fit", str(run), "--data", str(root), "--coreset", "0.5", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    bank = run / "anomaly" / "patchcore.safetensors"
    info = json.loads(bank.with_suffix(".json").read_text())
    assert info["image_size"] == SIZE and info["n_train"] == 16 and Path(info["run"]) == run.resolve()

    score = cli("anomaly", "score", str(bank), "--data", str(root), "--json", cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    records = json.loads(score.stdout.strip().splitlines()[-1])
    by = {(r["defect"], r["metric"]): r for r in records}
    assert set(by) == {(d, m) for d in ("all", "bright", "dark") for m in ("image_auroc", "pixel_auroc")}
    assert all(r["protocol"] == "anomaly" and r["encoder"] == "ssl" and r["task"] == "toy" for r in records)
    assert by["all", "image_auroc"]["mean"] >= 0.9 and by["all", "pixel_auroc"]["mean"] >= 0.8
    saved = json.loads((run / "metrics.json").read_text())
    assert {(r["defect"], r["metric"]) for r in saved} == set(by)

    rows = list(csv.DictReader(open(bank.parent / "scores.csv")))
    assert len(rows) == sum(counts.values())
    assert {r["defect"] for r in rows} == set(counts)
    good = [float(r["score"]) for r in rows if r["defect"] == "good"]
    bad = [float(r["score"]) for r in rows if r["defect"] != "good"]
    assert np.mean(bad) > np.mean(good)
    assert {p.name for p in (bank.parent / "heatmaps").iterdir()} == {f"{d}.png" for d in counts}
    html = (run / "report.html").read_text()
    assert 'id="anomaly"' in html and (run / "figures" / "anomaly_heatmaps.png").is_file()


def test_raw_baseline_scores_a_plain_folder(mvtec, tmp_path):
    """In process (the subprocess path is covered above): --raw, --normalize, a plain folder to score."""
    root, counts = mvtec
    bank = tmp_path / "raw" / "bank.safetensors"
    runner = CliRunner()
    fit = runner.invoke(app, ["anomaly", "fit", "--raw", "--data", str(root / "train" / "good"), "--image-size",
                              str(SIZE), "--patch", "4", "--normalize", "image", "--out", str(bank), "--json"])
    assert fit.exit_code == 0, fit.output
    summary = json.loads(fit.stdout.strip().splitlines()[-1])
    assert summary["run"] is None and summary["normalize"] == "image" and summary["memory_bank"][1] == 9 * 16

    score = runner.invoke(app, ["anomaly", "score", str(bank), "--data", str(root / "test"), "--out",
                                str(tmp_path / "out"), "--json"])
    assert score.exit_code == 0, score.output
    assert json.loads(score.stdout.strip().splitlines()[-1]) == []  # no masks: scores only
    rows = list(csv.DictReader(open(tmp_path / "out" / "scores.csv")))
    assert len(rows) == sum(counts.values()) and not (tmp_path / "raw" / "metrics.json").exists()
    bad = runner.invoke(app, ["anomaly", "fit", str(tmp_path), "--raw", "--data", str(root)])
    assert isinstance(bad.exception, ValueError) and "not both" in str(bad.exception)


def test_standardize_images_sets_mean_and_std():
    x = torch.stack([torch.full((1, 8, 8), 50.0), torch.full((1, 8, 8), 200.0)])
    x[:, :, :4] += 20
    out = standardize_images(x.to(torch.uint8)).float()
    assert out.dtype == torch.float32 and torch.allclose(out.mean(dim=(1, 2, 3)), torch.tensor([128.0, 128.0]), atol=1)
    assert torch.allclose(out[0], out[1])  # same pattern at another exposure: same standardised image
