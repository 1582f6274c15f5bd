"""End to end through the ``selfsup`` command, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["encoder.size=custom", "encoder.width=32", "encoder.depth=1", "encoder.heads=2", "encoder.patch_size=4",
        "method.decoder_width=16", "method.decoder_depth=1", "method.decoder_heads=2", "data.num_workers=0"]


def selfsup(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"selfsup {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_datasets_lists_forms():
    out = selfsup("datasets").stdout
    assert "digits" in out and ".tar" in out and ".npz" in out


def test_bad_input_is_one_line_error(tmp_path):
    proc = selfsup("pretrain", "--data", str(tmp_path / "nope"), "--steps", "1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and str(tmp_path / "nope") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = selfsup("pretrain", "--data", "digits", "--steps", "1", "train.lrr=1", check=False)
    assert proc.returncode == 2 and "did you mean 'train.lr'" in proc.stderr


@pytest.mark.slow
def test_digits_pretrain_evaluate_json(tmp_path):
    run = tmp_path / "run"
    selfsup("pretrain", "--method", "mae", "--data", "digits:train", "--steps", "6", "--out", str(run),
            "data.image_size=16", "train.batch_size=32", "train.ckpt_every=3", "train.log_every=2", *TINY)
    for name in ("config.yaml", "encoder.safetensors", "method.safetensors", "metrics.json",
                 "checkpoints/last.ckpt", "logs/csv/metrics.csv"):
        assert (run / name).exists(), name
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    proc = selfsup("evaluate", str(run), "--data", "digits:test", "--train-data", "digits:train",
                   "--protocol", "knn,linear", "--shots", "2", "--seeds", "2", "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {(r["protocol"], r["encoder"], r.get("baseline")) for r in records}
    # frozen protocols only: raw is the baseline, no scratch network is trained
    assert rows == {("knn", "ssl", None), ("knn", "raw", None), ("linear", "ssl", None), ("linear", "raw", None),
                    ("knn", "ssl", "raw"), ("linear", "ssl", "raw")}
    for r in records:
        assert r["task"] == "digits" and r["shots"] == 2 and r["n_seeds"] == 2
        assert r.get("baseline") or 0 <= r["mean"] <= 1
    assert "verdict" in proc.stdout and all("draws" in r["verdict"] for r in records if r.get("baseline"))
    # the same images as labels and test set are refused before anything runs
    leak = selfsup("evaluate", str(run), "--data", "digits", "--train-data", "digits:train", "--protocol", "knn",
                   check=False)
    assert leak.returncode == 2 and "share" in leak.stderr and len(leak.stderr.strip().splitlines()) == 1
    saved = json.loads((run / "metrics.json").read_text())
    assert any(r["protocol"] == "pretrain" for r in saved) and any(r["protocol"] == "knn" for r in saved)


@pytest.mark.slow
def test_cifar10_shards_pretrain_resume_evaluate(tmp_path, shared_data):
    shards = str(shared_data / "cifar10" / "train-{000000..000001}.tar.gz")
    run = tmp_path / "cifar"
    selfsup("pretrain", "--method", "mae", "--data", shards, "--steps", "3", "--out", str(run),
            "train.batch_size=16", "train.ckpt_every=2", *TINY)
    first = json.loads((run / "metrics.json").read_text())
    assert next(r for r in first if r["metric"] == "steps")["mean"] == 3
    selfsup("pretrain", "--resume", str(run), "--steps", "5")
    resumed = json.loads((run / "metrics.json").read_text())
    assert next(r for r in resumed if r["metric"] == "steps")["mean"] == 5
    proc = selfsup("evaluate", str(run), "--data", str(shared_data / "cifar10" / "test-000000.tar.gz"),
                   "--shots", "10", "--seeds", "3", "--protocol", "knn,linear", "--max-samples", "600", "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    knn = next(r for r in records if r["protocol"] == "knn" and r["encoder"] == "ssl")
    assert knn["task"] == "cifar10" and knn["n_seeds"] == 3 and knn["shots"] == 10
    assert 0.0 <= knn["mean"] <= 1.0


@pytest.mark.slow
def test_export_formats(tmp_path):
    run = tmp_path / "run"
    selfsup("pretrain", "--data", "digits:train", "--steps", "2", "--out", str(run), "data.image_size=16",
            "train.batch_size=32", *TINY)
    for fmt in ("safetensors", "onnx", "hf", "timm"):
        proc = selfsup("export", str(run), "--format", fmt)
        assert f"exported {fmt}" in proc.stdout
    assert (run / "export" / "encoder.onnx").is_file() and (run / "export" / "hf" / "config.json").is_file()
    proc = selfsup("export", str(run), "--format", "pickle", check=False)
    assert proc.returncode == 2 and "unknown export format" in proc.stderr
