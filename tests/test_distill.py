"""Feature distillation (``methods/distill.py``) and the regression guard (``train/monitor.py``)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import selfsup.api as ss
from selfsup import runs
from selfsup.methods.distill import distill_loss, feature_loss
from selfsup.train.monitor import Monitor

transformers = pytest.importorskip("transformers", reason="transformers (the interop extra) is not installed")
from test_pretrained import TINY, randomise  # noqa: E402


def test_feature_loss_by_hand():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert feature_loss(s, t, "cosine", target_norm=False).item() == pytest.approx(1.0)  # cos = 0
    assert feature_loss(s, t, "mse", target_norm=False).item() == pytest.approx(1.0)  # (1 + 1) / 2
    # target_norm: t' = ([0, 1] - 0.5) / 0.5 = [-1, 1]; cos(s, t') = -1 / sqrt(2); mse = (4 + 1) / 2
    assert feature_loss(s, t, "cosine", target_norm=True).item() == pytest.approx(1 + 1 / math.sqrt(2), abs=1e-5)
    assert feature_loss(s, t, "mse", target_norm=True).item() == pytest.approx(2.5, abs=1e-4)
    out = distill_loss(s, t, s[None], t[None], "cosine+mse", target_norm=False, global_weight=1.0, patch_weight=0.5)
    assert out["loss"].item() == pytest.approx(2 + 0.5 * 2)
    assert distill_loss(s, t, None, None, "mse", False)["patch"].item() == 0.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    randomise(transformers.Dinov2Model(transformers.Dinov2Config(**TINY, mlp_ratio=4))).save_pretrained(folder)
    return f"hf:{folder}"


STUDENT = ["encoder.size=tiny", "encoder.patch_size=8", "data.image_size=32", "train.batch_size=16",
           "data.num_workers=0", "train.log_every=1"]


def test_distill_trains_a_vit_tiny_student_from_a_saved_teacher(tmp_path, teacher):
    run = ss.pretrain("digits:train", "distill", teacher=teacher, steps=2, out=tmp_path / "run",
                      overrides=[*STUDENT, "method.cache_teacher=true"], log=lambda m: None)
    cfg = runs.load_run_config(run)
    assert (cfg.method["teacher"], cfg.method["teacher_dim"], cfg.method["teacher_patch_dim"]) == (teacher, 32, 32)
    assert list((run / "cache").glob("teacher-*-rank0.pt"))
    enc, spec, ecfg = ss.load_encoder(run)  # the student alone; the teacher is not in the run's weights
    assert ecfg.size == "tiny" and enc.embed_dim == 192 and not any("teacher" in k for k in
                                                                    runs.load_method(run).state_dict())
    ss.pretrain(resume=run, steps=3, log=lambda m: None)
    assert json.loads((run / "metrics.json").read_text())[1]["mean"] == 3  # steps

    # the student learns the teacher's features: the loss falls on a fixed batch
    method = runs.load_method(run).train()
    method.set_teacher(ss.load_encoder(teacher)[0])
    batch = {"image": torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8).float() / 255}  # grey digits
    method.cfg.augment = "none"
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = method(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_distill_needs_a_teacher(tmp_path):
    from selfsup.config import ConfigError

    with pytest.raises(ConfigError, match="needs --teacher"):
        ss.pretrain("digits:train", "distill", steps=1, out=tmp_path / "x", overrides=STUDENT, log=lambda m: None)


def fake_trainer(step: int = 0):
    return SimpleNamespace(global_step=step, loggers=[], is_global_zero=True, should_stop=False)


def test_monitor_keeps_the_best_weights_and_stops_after_falling():
    encoder = nn.Linear(2, 2)
    module = SimpleNamespace(method=SimpleNamespace(encoder=encoder))
    scores = iter([0.5, 0.8, 0.7, 0.75, 0.6, 0.5])
    mon = Monitor(lambda enc: next(scores), every=10, patience=2, min_delta=0.05, print_lines=False)
    trainer = fake_trainer()
    mon.on_train_start(trainer, module)
    best_weight = None
    for step in (10, 20, 30, 40, 50):
        with torch.no_grad():
            encoder.weight.fill_(step)
        if step == 10:
            best_weight = encoder.weight.clone()
        trainer.global_step = step
        mon.on_train_batch_end(trainer, module)
        assert trainer.should_stop == (step == 50), step
    assert [s for s, _ in mon.history] == [0, 10, 20, 30, 40, 50]
    assert mon.best_step == 10 and torch.equal(mon.best_state["weight"], best_weight)
    assert "fell below the best 0.8000 (step 10)" in mon.stopped  # 0.75 is within min_delta: not a fall
    other = Monitor(lambda enc: 0.0)
    other.load_state_dict(mon.state_dict())
    assert other.history == mon.history and torch.equal(other.best_state["weight"], best_weight)
