"""Tables and series end to end through the ``selfsup`` command, as a user types it: pretrain ->
evaluate -> anomaly fit / score, and pretrain -> forecast, on tiny files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_e2e import selfsup

SMALL = ["encoder.size=custom", "encoder.width=16", "encoder.depth=1", "encoder.heads=2", "data.num_workers=0",
         "train.batch_size=32", "train.log_every=1"]
DECODER = ["method.decoder_width=16", "method.decoder_depth=1", "method.decoder_heads=2"]


def tiny_table(path: Path, n: int = 160, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["amount,age,city,kind"]
    for i in range(n):
        y = int(i % 4 == 0)  # a rare class, a quarter of the rows
        city = ["rome", "oslo", "lima"][(i + y) % 3]
        amount = "?" if i % 17 == 5 else f"{rng.normal(3.0 * y, 1.0):.3f}"
        rows.append(f"{amount},{rng.integers(18, 80)},{city},{'fraud' if y else 'ok'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_table_pretrain_evaluate_anomaly(tmp_path: Path):
    train, test = tiny_table(tmp_path / "train.csv"), tiny_table(tmp_path / "test.csv", seed=1)
    run = tmp_path / "run"
    selfsup("pretrain", "--method", "mae", "--data", str(train), "--target", "kind", "--steps", "4", "--out",
            str(run), *SMALL, *DECODER)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["target"] == "kind"
    proc = selfsup("evaluate", str(run), "--data", str(test), "--train-data", str(train), "--protocol",
                   "knn,linear,semi,hybrid", "--shots", "5", "--seeds", "2", "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    cells = {(r["protocol"], r["encoder"], r["metric"]) for r in records if not r.get("baseline")}
    assert {("semi", "ssl", "top1"), ("semi", "raw", "top1"), ("hybrid", "ssl", "auprc")} <= cells
    assert {("knn", "ssl", "top1"), ("linear", "raw", "auprc"), ("supervised", "gbdt", "top1"),
            ("supervised", "gbdt", "auprc")} <= cells  # AUPRC: fraud is a quarter of the rows
    assert {r["baseline"] for r in records if r.get("baseline")} == {"raw", "gbdt"}
    selfsup("anomaly", "fit", str(run), "--data", str(train), "--split", "all")
    proc = selfsup("anomaly", "score", str(run / "anomaly"), "--data", str(test), "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {(r["encoder"], r["detector"]) for r in records} == {("ssl", "knn"), ("ssl", "reconstruction"),
                                                                   ("raw", "knn"), ("raw", "iforest"),
                                                                   ("ssl", "ensemble")}
    assert all(r["metric"] in ("auroc", "auprc") and r["n_test"] == 160 for r in records)
    assert (run / "anomaly" / "scores.csv").is_file() and (run / "figures" / "feature_errors.png").is_file()
    assert "Per-feature reconstruction error" in (run / "report.html").read_text()


@pytest.mark.slow
def test_series_pretrain_anomaly_and_forecast(tmp_path: Path):
    t = np.arange(3000)
    values = np.sin(2 * np.pi * t / 50) + 0.05 * np.random.default_rng(0).normal(size=t.size)
    values[2000:2030] += 2.0  # the anomaly the file name announces
    ucr = tmp_path / "001_UCR_Anomaly_Toy_1000_2000_2030.txt"
    ucr.write_text("\n".join(f"{v:.5f}" for v in values) + "\n")
    run = tmp_path / "series"
    selfsup("pretrain", "--method", "mae", "--data", str(ucr), "--window", "64", "--stride", "8", "--steps", "4",
            "--out", str(run), *SMALL, "encoder.series_patch=8")
    selfsup("anomaly", "fit", str(run), "--data", str(ucr))
    proc = selfsup("anomaly", "score", str(run / "anomaly"), "--data", str(ucr), "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    by = {(r["encoder"], r["detector"], r["metric"]): r for r in records}
    assert by["raw", "knn", "auroc"]["mean"] >= 0.9 and by["raw", "knn", "auroc"]["task"] == "001_Toy"
    assert (run / "figures" / "anomaly_over_time.png").is_file()
    assert "Anomaly scores over time" in (run / "report.html").read_text()

    csv = tmp_path / "load.csv"
    hours = np.arange(600)
    wave = np.stack([np.sin(2 * np.pi * hours / 24), np.cos(2 * np.pi * hours / 24)], 1)
    csv.write_text("date,load,temp\n" + "\n".join(
        f"2020-01-{1 + h // 24:02d} {h % 24:02d}:00:00,{a:.4f},{b:.4f}" for h, (a, b) in zip(hours, wave, strict=True))
        + "\n")
    run = tmp_path / "load"
    selfsup("pretrain", "--method", "ts2vec", "--data", str(csv), "--window", "48", "--steps", "3", "--out", str(run),
            *SMALL, "encoder.series_patch=8")
    proc = selfsup("forecast", str(run), "--data", str(csv), "--horizon", "8,16", "--lookback", "32", "--steps", "3",
                   "--json")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {(r["protocol"], r["encoder"], r["horizon"]) for r in records if r["metric"] == "mse"} == {
        (p, e, h) for p, es in (("forecast-linear", ("ssl", "dlinear")), ("forecast-finetune", ("ssl", "scratch")))
        for e in es for h in (8, 16)}
    dlinear = next(r for r in records if (r["encoder"], r["metric"], r["horizon"]) == ("dlinear", "mse", 8))
    assert dlinear["mean"] < 0.01 and dlinear["split"] == "ratio"  # a pure sinusoid is linear in its past
    assert (run / "figures" / "forecast.png").is_file()
