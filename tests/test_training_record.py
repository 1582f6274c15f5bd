"""What a pretraining run says about itself (issue 23, side findings): the final loss is the mean of
the last steps' losses, the loss history keeps every logged step and ends at the last one, a resumed
run keeps its earlier CSV log, SIGTERM saves the step reached, the progress line never overshoots,
names the data's unit and labels CPU seconds, and a small table starts no DataLoader workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from selfsup import api
from selfsup.evaluate.records import load_records
from selfsup.train.engine import LineProgress

TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=2",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "train.batch_size=4", "train.accelerator=cpu"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def final_loss(run: Path) -> float:
    return next(r["mean"] for r in load_records(run / "metrics.json") if r["metric"] == "final_loss")


def test_final_loss_is_the_mean_of_the_last_steps_and_history_ends_at_the_last_step(tmp_path):
    every = api.pretrain("digits:train", "mae", overrides=[*TINY, "train.log_every=1"], out=tmp_path / "every",
                         steps=17, log=lambda m: None)
    sparse = api.pretrain("digits:train", "mae", overrides=[*TINY, "train.log_every=10"], out=tmp_path / "sparse",
                          steps=17, log=lambda m: None)
    losses = json.loads((every / "loss_history.json").read_text())
    assert [s for s, _ in losses] == list(range(17))  # every step logged
    hist = json.loads((sparse / "loss_history.json").read_text())
    assert [s for s, _ in hist] == [0, 10, 16]  # every logged step, and the last one
    # the same seeds give the same per-step losses whatever is logged: the sparse run's final loss is
    # the mean of its last 10 steps (7..16), not the loss logged at step 10
    want = float(np.mean([v for _, v in losses[7:]]))
    assert final_loss(sparse) == pytest.approx(want, rel=1e-4)
    assert final_loss(every) == pytest.approx(losses[-1][1], rel=1e-4)  # log_every 1: the last step's loss
    assert hist[-1][1] == pytest.approx(losses[-1][1], rel=1e-4)


def test_resume_keeps_the_earlier_csv_log(tmp_path):
    run = api.pretrain("digits:train", "mae", overrides=[*TINY, "train.log_every=1", "train.ckpt_every=3"],
                       out=tmp_path / "run", steps=6, log=lambda m: None)
    first = list(csv.DictReader(open(run / "logs/csv/metrics.csv")))
    api.pretrain(resume=run, steps=9, log=lambda m: None)
    kept = list(csv.DictReader(open(run / "logs/csv-1/metrics.csv")))
    assert kept == first and len(kept) > 0  # the first session's log, untouched
    second = list(csv.DictReader(open(run / "logs/csv/metrics.csv")))
    assert {int(r["step"]) for r in second if r.get("train/loss")} and \
        min(int(r["step"]) for r in second) >= 6  # the new session logs its own steps


@pytest.mark.slow  # a CLI pretraining killed with SIGTERM and resumed: about 30 s on 2 busy cores
def test_sigterm_saves_the_step_reached_and_resume_continues_there(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "selfsup.cli", "pretrain", "--method", "mae", "--data", "digits:train",
           "--out", str(run), "--steps", "100000", *TINY, "train.ckpt_every=100000", "train.ckpt_minutes=1000",
           "train.log_every=1"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    while p.poll() is None:  # the progress line is printed at the first step
        seen.append(p.stderr.readline())
        if seen[-1].startswith("step "):
            break
    time.sleep(3)  # some steps more, far from any periodic checkpoint
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    err = "".join(seen) + err
    assert p.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "SIGTERM" in err.strip().splitlines()[-1]
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True, map_location="cpu")
    reached = ckpt["global_step"]
    assert reached > 0
    said: list[str] = []
    api.pretrain(resume=run, steps=reached + 2, log=said.append)
    assert any(m.startswith("resuming from") for m in said)
    assert [r["mean"] for r in load_records(run / "metrics.json") if r["metric"] == "steps"] == [reached + 2]


def fake_module(step_total: int, elapsed: float, modality: str | None, seen: int = 1000):
    encoder = SimpleNamespace(modality=modality) if modality else SimpleNamespace()
    return SimpleNamespace(total_steps=step_total, elapsed=elapsed, images_seen=seen,
                           method=SimpleNamespace(encoder=encoder))


def test_progress_line_never_overshoots_and_names_its_units():
    line = LineProgress().line(105, fake_module(102, 10.0, "image"), 1.5)
    assert line.startswith("step 102/102 ") and "100 img/s" in line
    assert "rows/s" in LineProgress().line(5, fake_module(10, 10.0, "table"), 1.0)
    assert "series/s" in LineProgress().line(5, fake_module(10, 10.0, "series"), 1.0)
    assert "samples/s" in LineProgress().line(5, fake_module(10, 10.0, None), 1.0)
    budget = LineProgress(budget_s=600, clock="cpu").line(733, fake_module(790, 47.0, "table"), 1.0)
    assert budget.startswith("step 733 ") and "/790" not in budget  # the estimate that wanders is not shown
    assert "47s CPU of 600s CPU" in budget
    assert "CPU" not in LineProgress(budget_s=600).line(3, fake_module(790, 47.0, "table"), 1.0)


def test_small_table_starts_no_dataloader_workers(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "label"])
        for _ in range(478):
            w.writerow([*np.round(rng.normal(size=3), 4), int(rng.integers(0, 2))])
    run = api.pretrain(str(path), "mae", out=tmp_path / "run", steps=2, data_options={"target": "label"},
                       overrides=["encoder.width=16", "encoder.depth=1", "encoder.heads=2", "train.batch_size=32",
                                  "train.accelerator=cpu"], log=lambda m: None)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["num_workers"] == 0
