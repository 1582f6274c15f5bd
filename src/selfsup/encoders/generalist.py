"""selfsup's own small foundation models, shipped in the package: ``selfsup:series-small``.

``series-small`` is a univariate PatchTST pretrained self-supervised on synthetic series only
(``scripts/train_generalist_series.py``: KernelSynth-style Gaussian-process kernel compositions,
``data.synthetic``; the objective chosen on a synthetic validation task), so no UCR/UEA, ADBench
or shared evaluation set was in its corpus. It reads any series as ``ResampledSeries`` does:
channel-independent (each channel encoded on its own by the same weights, features concatenated)
and length-resampled to the length it was trained at. Its weights and config sit in
``selfsup/weights/<name>.safetensors`` (the run's ``encoder.safetensors``, config and input spec in
the metadata), so a fresh clone loads it without a network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from selfsup.data.spec import InputSpec

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
GENERALISTS = {"series-small": "series-small.safetensors"}


def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """(N, T) series with NaN for unobserved steps -> (N, length): each row's observed span (to its last
    observed step; gaps inside filled linearly) stretched or shrunk linearly to ``length`` steps."""
    x = x.float()
    if not torch.isnan(x).any():
        return F.interpolate(x[:, None], size=length, mode="linear", align_corners=True)[:, 0]
    out = torch.zeros(len(x), length)
    for i, row in enumerate(x):
        seen = torch.nonzero(~torch.isnan(row)).flatten()
        if len(seen) == 0:
            continue
        row = row[: int(seen[-1]) + 1]
        if torch.isnan(row).any():
            t = torch.arange(len(row), dtype=torch.float64)
            ok = ~torch.isnan(row)
            row = torch.from_numpy(np.interp(t.numpy(), t[ok].numpy(), row[ok].double().numpy()))
        out[i] = F.interpolate(row.float()[None, None], size=length, mode="linear", align_corners=True)[0, 0]
    return out


class ResampledSeries(nn.Module):
    """A univariate series encoder applied to every channel of (B, C, T) series resampled to ``length``:
    features (B, C * D), channels in order. ``num_features`` assumes ``channels`` channels (frozen use
    works for any count)."""

    def __init__(self, encoder: nn.Module, length: int, channels: int = 1) -> None:
        super().__init__()
        self.encoder, self.length, self.channels = encoder, length, channels
        self.embed_dim = encoder.num_features
        self.num_features = channels * self.embed_dim

    def forward(self, x) -> torch.Tensor:
        if isinstance(x, dict):
            x = x["series"]
        b, c, _ = x.shape
        flat = resample(x.reshape(b * c, -1), self.length).to(next(self.encoder.parameters()).device)
        return self.encoder(flat[:, None]).reshape(b, c * self.embed_dim)


def load_generalist(name: str, channels: int = 1) -> tuple[nn.Module, InputSpec, object]:
    """``(encoder, spec, config)`` of the shipped model ``name`` (``GENERALISTS``), in eval mode."""
    from selfsup.encoders import EncoderConfig, build_encoder

    if name not in GENERALISTS:
        raise ValueError(f"unknown selfsup model {name!r}; shipped: {', '.join(GENERALISTS)}")
    path = WEIGHTS / GENERALISTS[name]
    if not path.is_file():
        raise FileNotFoundError(f"selfsup:{name}: the package has no {path} (train it with "
                                "scripts/train_generalist_series.py)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    cfg = EncoderConfig.model_validate_json(meta["encoder_config"])
    inner_spec = InputSpec(**json.loads(meta["input_spec"]))
    inner = build_encoder(cfg, inner_spec)
    inner.load_state_dict(load_file(str(path)))
    spec = InputSpec(modality="series", channels=int(channels), series_length=inner_spec.series_length)
    return ResampledSeries(inner, int(inner_spec.series_length), int(channels)).eval(), spec, cfg


__all__ = ["GENERALISTS", "ResampledSeries", "load_generalist", "resample"]
