"""selfsup's own small foundation models, shipped in the package: ``selfsup:series-small``.

``series-small`` is a univariate PatchTST pretrained self-supervised on synthetic series only
(``scripts/train_generalist_series.py``: KernelSynth-style Gaussian-process kernel compositions,
``data.synthetic``; the objective chosen on a synthetic validation task), so no UCR/UEA, ADBench
or shared evaluation set was in its corpus. It reads any series as ``ResampledSeries`` does:
channel-independent (each channel encoded on its own by the same weights, features concatenated)
and length-resampled to the length it was trained at; ``pretrain --init selfsup:series-small``
continues its weights as a plain PatchTST on the run's data. Its weights and config sit in
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
from selfsup.encoders.series import PatchTST

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


class ResampledSeries(PatchTST):
    """A PatchTST that reads every series resampled to ``length`` steps (``resample``); channels are
    encoded independently as PatchTST always does, features (B, C * D). Its weights and their names
    are the PatchTST's (they do not depend on the channel count), so ``pretrain --init`` continues
    them on data of any shape. ``num_features`` assumes ``channels`` channels (frozen use works for
    any count)."""

    @classmethod
    def wrap(cls, encoder: PatchTST, length: int, channels: int = 1) -> ResampledSeries:
        """``encoder`` itself (same parameters, not copies) reading resampled series."""
        out = cls.__new__(cls)
        out.__dict__.update(encoder.__dict__)
        out.length, out.channels, out.num_features = int(length), int(channels), int(channels) * encoder.embed_dim
        return out

    def _resampled(self, x) -> torch.Tensor:
        x = self._series(x)
        b, c, _ = x.shape
        return resample(x.reshape(b * c, -1), self.length).to(x.device).reshape(b, c, self.length)

    def forward_features(self, x) -> torch.Tensor:
        return super().forward_features(self._resampled(x))

    def forward(self, x) -> torch.Tensor:
        return super().forward(self._resampled(x))


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
    return ResampledSeries.wrap(inner, int(inner_spec.series_length), int(channels)).eval(), spec, cfg


__all__ = ["GENERALISTS", "ResampledSeries", "load_generalist", "resample"]
