"""One training step's memory is measured before the first step; a batch that does not fit is halved (issue 23)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from selfsup.train import memory
from selfsup.train.memory import StepMemory, check_step_memory, fit_batch, probe_step_bytes


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 8))

    def forward(self, batch):
        return {"loss": self.net(batch["image"] + 0.01 * torch.randn_like(batch["image"])).pow(2).mean()}


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 255, (n, 1, 8, 8), generator=g, dtype=torch.uint8), "label": torch.zeros(n)}


def test_fit_rule_halves_to_the_largest_batch_that_fits():
    mem = StepMemory(fixed=100.0, per_sample=10.0)  # need(b) = 1.25 * (100 + 10 b)
    assert fit_batch(mem, 64, available=1e9) == 64
    assert fit_batch(mem, 64, available=memory.MARGIN * (100 + 10 * 16)) == 16
    assert fit_batch(mem, 64, available=memory.MARGIN * (100 + 10 * 16) - 1) == 8
    assert fit_batch(mem, 64, available=100.0) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe reads /proc (Linux)")
def test_batch_is_halved_and_announced_and_the_model_is_untouched(monkeypatch):
    torch.manual_seed(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    mem = probe_step_bytes(model, _batch())
    if mem is None:
        pytest.skip("/proc/self/clear_refs cannot be written here")
    assert mem.per_sample >= 0 and mem.fixed > 0
    # the probe ran on a copy: weights, BatchNorm running statistics, gradients and the RNG are as they were
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)

    lines: list[str] = []
    assert check_step_memory(model, _batch(), 64, lines.append) == 64  # a real machine: fits, said once
    assert len(lines) == 1 and "batch 64" in lines[0] and "GiB available" in lines[0]

    fake = StepMemory(fixed=1000.0, per_sample=100.0)
    monkeypatch.setattr(memory, "probe_step_bytes", lambda *a: fake)
    monkeypatch.setattr(memory, "memory_bytes", lambda: int(fake.need(16)))
    lines.clear()
    assert check_step_memory(model, _batch(), 64, lines.append) == 16
    assert len(lines) == 1 and "training with batch 16" in lines[0] and "available" in lines[0]
    monkeypatch.setattr(memory, "memory_bytes", lambda: 500)
    with pytest.raises(ValueError, match="even at batch 2"):
        check_step_memory(model, _batch(), 64, lines.append)
    monkeypatch.setattr(memory, "probe_step_bytes", lambda *a: None)  # /proc unreadable: no check, no crash
    assert check_step_memory(model, _batch(), 64, lines.append) == 64


@pytest.mark.slow
def test_pretrain_writes_the_halved_batch_to_the_config(monkeypatch, tmp_path):
    from selfsup.api import pretrain
    from selfsup.runs import load_run_config

    fake = StepMemory(fixed=1000.0, per_sample=100.0)
    monkeypatch.setattr(memory, "probe_step_bytes", lambda *a: fake)
    monkeypatch.setattr(memory, "memory_bytes", lambda: int(fake.need(32)))
    lines: list[str] = []
    run = pretrain("digits:train", "mae", steps=1, out=tmp_path / "run", log=lines.append,
                   overrides=["train.batch_size=128", "data.num_workers=0", "train.accelerator=cpu"])
    assert any("training with batch 32" in line for line in lines)
    assert load_run_config(run).train.batch_size == 32
