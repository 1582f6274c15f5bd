"""Precision settings: "auto" follows the hardware and the measured CPU switch; autocast matches."""

import pytest
import torch

from selfsup import hardware
from selfsup.train.engine import resolve_precision


def test_auto_on_cpu_needs_native_bf16_and_the_measured_switch(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(hardware, "CPU_BF16_IN_AUTO", False)
    assert hardware.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(hardware, "CPU_BF16_IN_AUTO", True)
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is slow: never chosen
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"  # asked for: given
    with pytest.raises(ValueError, match="unknown precision"):
        hardware.resolve_precision("fp8")


def test_lightning_strings_and_aliases(monkeypatch):
    monkeypatch.setattr(hardware, "CPU_BF16_IN_AUTO", False)
    assert resolve_precision("fp32") == "32-true" and resolve_precision("bf16") == "bf16-mixed"
    assert resolve_precision("bf16-mixed") == "bf16-mixed" and resolve_precision("auto", "cpu") == "32-true"


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    a = torch.randn(4, 4)
    with hardware.autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with hardware.autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32


def test_cpu_flags_are_read_not_guessed():
    assert isinstance(hardware.cpu_has_native_bf16(), bool)
