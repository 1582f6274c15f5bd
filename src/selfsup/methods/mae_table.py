"""Masked feature modelling on tables: ``--method mae`` on "table" data.

The MAE recipe (He et al. 2021) on FT-Transformer feature tokens, as in MET (Majmundar et al.
2022, "MET: Masked Encoding for Tabular Data"): a random ``mask_ratio`` of each row's columns is
hidden (VIME, Yoon et al. 2020, masks with probability 0.3, the default here), the encoder sees the
visible feature tokens only, and a light decoder gets them back with a shared mask token at each
hidden column plus a learned per-column embedding (a hidden column has no value to say which it
is) and predicts every column: a number for a numeric column, logits over its categories for a
categorical one. The loss is the squared error of hidden numeric values (standardised, so columns
weigh alike) plus the cross-entropy of hidden categories, averaged over hidden cells whose value is
known: a value that was missing in the data is never a target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.layers import Block
from selfsup.methods.mae import MAEConfig, random_masking

TABLE_MASK_RATIO = 0.3


def masked_feature_loss(
    num_pred: torch.Tensor,
    num_target: torch.Tensor,
    cat_logits: list[torch.Tensor],
    cat_target: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss over hidden cells with a known value, and the per-cell errors.

    num_pred / num_target (B, F) (target NaN = missing), cat_logits K tensors (B, card_k),
    cat_target (B, K) (0 = missing), mask (B, F + K) with 1 = hidden, numeric columns first.
    Returns (sum of squared errors + cross-entropies) / (number of counted cells), and the errors
    (B, F + K) with NaN where a cell is not counted (visible or unknown).
    """
    Fn = num_target.shape[1]
    known_num = ~torch.isnan(num_target)
    err_num = (num_pred - torch.nan_to_num(num_target)) ** 2
    errs = [torch.where(known_num & (mask[:, :Fn] > 0), err_num, torch.full_like(err_num, float("nan")))]
    for k, logits in enumerate(cat_logits):
        t = cat_target[:, k].long()
        ce = F.cross_entropy(logits, t, reduction="none")
        counted = (t > 0) & (mask[:, Fn + k] > 0)
        errs.append(torch.where(counted, ce, torch.full_like(ce, float("nan"))).unsqueeze(1))
    errors = torch.cat(errs, dim=1)
    counted = ~torch.isnan(errors)
    loss = torch.where(counted, errors, torch.zeros_like(errors)).sum() / counted.sum().clamp(min=1)
    return loss, errors


class TableMAE(nn.Module):
    """FT-Transformer encoder + light transformer decoder over feature tokens.

    ``forward(batch)`` returns loss, ``num_pred`` (B, F), ``mask`` (B, F + K) (1 = hidden).
    """

    modalities = ("table",)
    Config = MAEConfig

    def __init__(self, cfg: MAEConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if spec.modality != "table":
            raise ValueError(f"masked feature modelling needs table data, not {spec.modality}")
        self.cfg, self.spec = cfg, spec
        self.mask_ratio = TABLE_MASK_RATIO if cfg.mask_ratio is None else cfg.mask_ratio
        self.encoder = build_encoder(encoder, spec)
        D, d = self.encoder.embed_dim, cfg.decoder_width
        self.num_numeric, self.cardinalities = spec.num_features or 0, list(spec.cardinalities or [])
        n = self.encoder.num_tokens
        self.decoder_embed = nn.Linear(D, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + n, d))  # which column a token is (CLS first)
        self.decoder_blocks = nn.ModuleList(Block(d, cfg.decoder_heads) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.num_head_weight = nn.Parameter(torch.zeros(self.num_numeric, d))  # one linear map per column
        self.num_head_bias = nn.Parameter(torch.zeros(self.num_numeric))
        self.cat_heads = nn.ModuleList(nn.Linear(d, c) for c in self.cardinalities)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_pos_embed, std=0.02)
        nn.init.xavier_uniform_(self.num_head_weight)
        for m in [self.decoder_embed, *self.cat_heads, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoded [CLS, visible] (B, 1 + n_keep, D) -> numeric predictions (B, F), category logits."""
        x = self.decoder_embed(latent)
        B, N = restore.shape
        hidden = self.mask_token.expand(B, N - (x.shape[1] - 1), -1).to(x.dtype)
        x_ = torch.gather(torch.cat([x[:, 1:], hidden], dim=1), 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        h = self.decoder_norm(x)[:, 1:]
        Fn = self.num_numeric
        num_pred = (h[:, :Fn] * self.num_head_weight).sum(-1) + self.num_head_bias
        cat_logits = [head(h[:, Fn + k]) for k, head in enumerate(self.cat_heads)]
        return num_pred, cat_logits

    def forward(self, batch: dict, mask_ratio: float | None = None, generator: torch.Generator | None = None) -> dict:
        x_num, x_cat = batch["features"], batch["categories"]
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        B, N = x_num.shape[0], self.encoder.num_tokens
        keep, mask, restore = random_masking(B, N, ratio, device=x_num.device, generator=generator)
        latent = self.encoder.forward_tokens(self.encoder.embed(x_num, x_cat), keep)
        num_pred, cat_logits = self.decode(latent, restore)
        loss, errors = masked_feature_loss(num_pred, x_num, cat_logits, x_cat, mask)
        return {"loss": loss, "num_pred": num_pred, "mask": mask, "errors": errors}

    @torch.no_grad()
    def reconstruction_errors(self, batch: dict, passes: int = 8, seed: int = 0) -> torch.Tensor:
        """Per-cell reconstruction error (B, F + K), averaged over ``passes`` random masks; NaN for a
        cell never hidden or with no known value. A row's anomaly score is its mean (``nanmean``)."""
        g = torch.Generator(device=batch["features"].device).manual_seed(seed)
        total = torch.zeros(batch["features"].shape[0], self.encoder.num_tokens, device=batch["features"].device)
        count = torch.zeros_like(total)
        for _ in range(passes):
            errors = self.forward(batch, generator=g)["errors"].float()
            seen = ~torch.isnan(errors)
            total += torch.where(seen, errors, torch.zeros_like(errors))
            count += seen
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


__all__ = ["TableMAE", "masked_feature_loss"]
