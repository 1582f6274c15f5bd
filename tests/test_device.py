"""One device rule (``hardware.resolve_device``) behind ``--device`` on every command that runs a
network, checked on the CPU with a faked accelerator; and the demo's fixed work."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from selfsup import api, hardware, runs
from selfsup.cli import app
from selfsup.config import build_config
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder

api_pretrain = importlib.import_module("selfsup.api.pretrain")  # the module (selfsup.api.pretrain is the function)
TINY = EncoderConfig(size="custom", patch_size=4, width=32, depth=2, heads=2, pool="avg")
SPEC = InputSpec(channels=1, image_size=8)


def fake_cuda(monkeypatch, count: int = 2) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def no_accelerator(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)


def test_auto_is_the_accelerator_when_present(monkeypatch):
    no_accelerator(monkeypatch)
    assert hardware.resolve_device("auto") == torch.device("cpu")
    assert hardware.resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(hardware, "_mps_available", lambda: True)
    assert hardware.resolve_device("auto") == torch.device("mps")
    fake_cuda(monkeypatch)
    assert hardware.resolve_device("auto") == torch.device("cuda", 0)  # CUDA before MPS
    assert hardware.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert hardware.resolve_device("CPU") == torch.device("cpu")


def test_an_absent_or_unknown_device_is_a_clear_error(monkeypatch):
    no_accelerator(monkeypatch)
    for name, msg in [("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"), ("mps", "MPS"), ("tpu", "unknown --device"),
                      ("cuda:x", "unknown --device")]:
        with pytest.raises(ValueError, match=msg):
            hardware.resolve_device(name)
    fake_cuda(monkeypatch, count=2)
    with pytest.raises(ValueError, match="only 2 CUDA"):
        hardware.resolve_device("cuda:2")


def test_pretraining_device_becomes_lightning_arguments(monkeypatch):
    fake_cuda(monkeypatch)
    assert hardware.lightning_device("auto") == {} and hardware.lightning_device(None) == {}
    assert hardware.lightning_device("cpu") == {"accelerator": "cpu", "devices": 1}
    assert hardware.lightning_device("cuda") == {"accelerator": "gpu", "devices": 1}
    assert hardware.lightning_device("cuda:1") == {"accelerator": "gpu", "devices": "1,"}  # GPU index 1
    cfg = build_config({"method": {"name": "mae"}}, api_pretrain.device_overrides("cuda:1"))
    assert (cfg.train.accelerator, cfg.train.devices) == ("gpu", "1,")
    cfg = build_config({"method": {"name": "mae"}}, api_pretrain.device_overrides("cpu"))
    assert (cfg.train.accelerator, cfg.train.devices) == ("cpu", 1)


NETWORK_COMMANDS = [("pretrain",), ("evaluate",), ("adapt",), ("predict",), ("embed",), ("anomaly", "fit"),
                    ("anomaly", "score"), ("forecast",), ("zero-shot",), ("retrieve",), ("export",), ("demo",)]


def test_every_command_that_runs_a_network_lists_device():
    runner = CliRunner()
    for name in NETWORK_COMMANDS:
        out = runner.invoke(app, [*name, "--help"], terminal_width=200).output
        assert "--device" in out, f"selfsup {' '.join(name)} --help has no --device"
    pretrain_help = runner.invoke(app, ["pretrain", "--help"], terminal_width=200).output
    assert "train.clock=cpu" in pretrain_help
    assert typer.main.get_command(app)  # the app still builds


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    run = root / "run"
    run.mkdir()
    holder = nn.Module()
    torch.manual_seed(0)
    holder.encoder = build_encoder(TINY, SPEC)
    runs.save_encoder(holder, build_config({"method": {"name": "mae"}, "encoder": TINY.model_dump()}), SPEC, run)
    g = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = g.integers(0, 60, (40, 8, 8)).astype(np.uint8)
    x[y == 0, :, :4] += 150
    x[y == 1, :, 4:] += 150
    np.savez(root / "data.npz", images=x, labels=y)
    (root / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(x[i]).save(root / "imgs" / f"{i}.png")
    return run, root


def test_jobs_run_their_network_on_the_resolved_device(tiny_run, monkeypatch):
    """With CUDA faked, "auto" resolves to the GPU in every job; the resolver is then pointed back at the
    CPU (no GPU here) and the encoder the job runs is checked to sit where the resolver said."""
    run, root = tiny_run
    fake_cuda(monkeypatch)
    assert hardware.resolve_device("auto").type == "cuda"
    asked: list[str] = []

    def resolver(device="auto"):
        asked.append(str(device))
        return torch.device("cpu")

    monkeypatch.setattr(runs, "resolve_device", resolver)
    from selfsup.evaluate import features

    seen: list[torch.device] = []
    real = features.encode_images

    def spy(module, *args, **kwargs):
        seen.append(next(module.parameters()).device)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(features, "encode_images", spy)
    api.embed(run, str(root / "data.npz"), root / "f.npz", device="cuda:1", log=lambda m: None)
    assert asked[-1] == "cuda:1" and seen and all(d.type == "cpu" for d in seen)
    api.evaluate(run, str(root / "data.npz"), protocols=["knn"], baselines=[], shots=[2], seeds=1,
                 out=root / "eval", device="auto", log=lambda m: None)
    assert asked[-1] == "auto"
    bank = api.anomaly_fit(run, str(root / "data.npz"), out=root / "bank", device="cuda:0", log=lambda m: None)
    assert asked[-1] == "cuda:0"
    api.anomaly_score(bank, str(root / "imgs"), out=root / "scores", report=False, device="cuda",
                      log=lambda m: None)
    assert asked[-1] == "cuda"


def test_load_encoder_without_a_device_stays_on_the_cpu(tiny_run, monkeypatch):
    fake_cuda(monkeypatch)  # a library call that names no device keeps the old behaviour
    encoder, _, _ = runs.load_encoder(tiny_run[0])
    assert next(encoder.parameters()).device.type == "cpu"


def test_demo_does_fixed_work(monkeypatch, tmp_path):
    calls: list[dict] = []
    monkeypatch.setattr(api_pretrain, "pretrain", lambda *a, **k: calls.append(k) or tmp_path)
    monkeypatch.setattr(api_pretrain, "evaluate", lambda *a, **k: [])
    monkeypatch.setattr(api_pretrain, "report", lambda *a, **k: tmp_path / "report.html")
    api_pretrain.demo(out=tmp_path, log=lambda m: None)
    assert calls[-1]["steps"] == api_pretrain.DEMO_STEPS and "budget" not in calls[-1]
    api_pretrain.demo(out=tmp_path, budget="3m", log=lambda m: None)
    assert calls[-1]["budget"] == "3m" and "steps" not in calls[-1]


def test_forecast_finetune_follows_the_autocast_rule():
    from selfsup.evaluate.forecast import predict

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 2)

        def forward(self, x):
            self.dtype = self.lin(x).dtype
            return self.lin(x)

    m, x = Probe(), np.random.default_rng(0).normal(size=(5, 1, 6)).astype(np.float32)
    assert predict(m, x, precision="bf16").dtype == np.float32 and m.dtype == torch.bfloat16
    assert predict(m, x, precision="fp32").dtype == np.float32 and m.dtype == torch.float32
