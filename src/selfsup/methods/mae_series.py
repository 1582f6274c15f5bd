"""Masked patch reconstruction on series: ``--method mae`` on "series" data.

PatchTST's self-supervised recipe (Nie et al. 2023, section 3.3): the series is instance-normalised
and cut into non-overlapping patches (overlap would let a hidden patch be read off its
neighbours), a random 40 % of each channel's patches are set to zero, the encoder sees all
patches, and a linear head maps every output token back to its patch's ``patch_size`` values.
The loss is the mean squared error over the hidden patches' observed steps (in the normalised
scale). Channels are masked independently, like the encoder treats them.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.methods.mae import MAEConfig, random_masking

SERIES_MASK_RATIO = 0.4


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the observed steps of hidden patches.

    pred / target (..., n, P) (target NaN = not observed), mask (..., n) with 1 = hidden.
    """
    counted = (mask.unsqueeze(-1) > 0) & ~torch.isnan(target)
    se = (pred - torch.nan_to_num(target)) ** 2
    return torch.where(counted, se, torch.zeros_like(se)).sum() / counted.sum().clamp(min=1)


class SeriesMAE(nn.Module):
    """PatchTST encoder + linear patch head; ``forward`` returns loss, pred and target (B, C, n, P),
    mask (B, C, n)."""

    modalities = ("series",)
    Config = MAEConfig

    def __init__(self, cfg: MAEConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if spec.modality != "series":
            raise ValueError(f"masked patch reconstruction needs series data, not {spec.modality}")
        self.cfg, self.spec = cfg, spec
        self.mask_ratio = SERIES_MASK_RATIO if cfg.mask_ratio is None else cfg.mask_ratio
        self.encoder = build_encoder(encoder, spec)
        if self.encoder.stride != self.encoder.patch_size:
            raise ValueError("masked patch reconstruction needs non-overlapping patches: leave "
                             "encoder.series_stride unset (or equal to encoder.series_patch)")
        self.head = nn.Linear(self.encoder.embed_dim, self.encoder.patch_size)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict, mask_ratio: float | None = None, generator: torch.Generator | None = None) -> dict:
        enc = self.encoder
        patches, _, _ = enc.patches(batch["series"])  # (B, C, n, P) normalised, NaN = not observed
        B, C, n, P = patches.shape
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        _, mask, _ = random_masking(B * C, n, ratio, device=patches.device, generator=generator)
        mask = mask.reshape(B, C, n)
        empty = torch.isnan(patches).all(-1)  # padding stays padding
        hidden = (mask > 0) & ~empty
        inputs = torch.where(hidden.unsqueeze(-1), torch.zeros_like(patches), patches)
        tokens = enc.forward_tokens(enc.embed_patches(inputs), lengths=enc.token_lengths(patches))
        pred = self.head(tokens).reshape(B, C, n, P)
        loss = masked_patch_loss(pred, patches, hidden.to(pred.dtype))
        return {"loss": loss, "pred": pred, "target": patches, "mask": hidden.to(pred.dtype)}

    @torch.no_grad()
    def reconstruction_errors(self, batch: dict, passes: int = 8, seed: int = 0) -> torch.Tensor:
        """Per-series reconstruction error (B,): squared error of hidden steps, averaged over
        ``passes`` random masks and all channels (an anomaly score per window)."""
        device = batch["series"].device
        g = torch.Generator(device=device).manual_seed(seed)
        total = torch.zeros(batch["series"].shape[0], device=device)
        count = torch.zeros_like(total)
        for _ in range(passes):
            out = self.forward(batch, generator=g)
            counted = (out["mask"].unsqueeze(-1) > 0) & ~torch.isnan(out["target"])
            se = torch.where(counted, (out["pred"] - torch.nan_to_num(out["target"])) ** 2, 0.0)
            total += se.flatten(1).sum(1).float()
            count += counted.flatten(1).sum(1).float()
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


__all__ = ["SeriesMAE", "masked_patch_loss"]
