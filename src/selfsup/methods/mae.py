"""Masked autoencoding on every data type (He et al. 2021, "Masked Autoencoders Are Scalable Vision
Learners"): one method, one decoder, the tokenizer's targets and loss.

The encoder sees only a random subset of its tokens (1 - mask_ratio of them); a light transformer
decoder gets the encoded visible tokens plus a shared mask token at every hidden position (with the
decoder positions the tokenizer gives) and predicts each hidden token's target through the
tokenizer's head. What a token and its target are is the tokenizer's (``encoders.trunk.Maskable``):
image patches and their pixels (loss against per-patch normalised pixels with ``norm_pix_loss``),
table cells and their numbers / categories (MET, Majmundar et al. 2022: squared error and
cross-entropy of hidden cells with a known value), series patches of each channel and their
instance-normalised values (PatchTST's task, Nie et al. 2023). ``reconstruction_errors`` gives the
per-token error of every data type, averaged over random masks: an anomaly score per cell, patch
or window.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.augment import horizontal_flip, random_resized_crop
from selfsup.data.spec import InputSpec, denormalize
from selfsup.encoders import EncoderConfig, build_encoder, input_stats, to_input
from selfsup.encoders.trunk import Maskable, init_weights, make_blocks
from selfsup.encoders.vit import VisionTransformer, mae_loss, patchify, unpatchify
from selfsup.methods.base import Method

CROP_SCALE = (0.35, 1.0)  # MAE's random resized crop keeps at least 35% of the area (He et al. 2021, A.1)
IMAGE_MASK_RATIO = VisionTransformer.mask_ratio
# method.safetensors of table runs before the one MAE (issue 19): the column heads sat on the method
OLD_TABLE_KEYS = ("num_head_weight", "num_head_bias", "cat_heads.")


class MAEConfig(BaseModel):
    """Options of masked modelling on every data type (``--method mae``).

    ``mask_ratio`` None means the tokenizer's own: 0.75 for images (He et al.), 0.4 for series
    (PatchTST), 0.3 for tables (VIME's masking probability). ``norm_pix_loss`` and ``augment``
    apply to images.
    """

    model_config = ConfigDict(extra="forbid")
    mask_ratio: float | None = None
    decoder_width: int = 128
    decoder_depth: int = 4
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    augment: Literal["none", "flip", "crop", "crop_flip"] = "crop_flip"


def random_masking(batch: int, n: int, mask_ratio: float, device=None, generator=None):
    """Per-sample random split of n positions.

    Returns ``keep`` (B, n_keep) indices of the visible patches, ``mask`` (B, n) with 1 = hidden,
    and ``restore`` (B, n), the permutation that puts [visible, hidden] back in patch order.
    """
    n_keep = max(1, int(round(n * (1.0 - mask_ratio))))
    noise = torch.rand(batch, n, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :n_keep]
    mask = torch.ones(batch, n, device=device)
    mask[:, :n_keep] = 0
    return keep, torch.gather(mask, 1, restore), restore


class MAE(Method):
    """Transformer encoder + light transformer decoder; ``forward`` returns loss, pred, target, mask (B', N)
    (1 = hidden) and the per-token ``errors`` (B', N) (NaN where not counted)."""

    Config = MAEConfig
    modalities = ("image", "table", "series")

    def __init__(self, cfg: MAEConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        self.encoder = build_encoder(encoder, spec)
        enc = self.encoder
        if not isinstance(enc, Maskable):
            raise ValueError(f"mae needs a transformer encoder (encoder.name=vit), not {encoder.name}")
        if cfg.mask_ratio is None:
            cfg = cfg.model_copy(update={"mask_ratio": enc.mask_ratio})
        self.cfg, self.spec, self.mask_ratio = cfg, spec, cfg.mask_ratio
        self.images = spec.input_key == "image"  # crops and flips apply to images only
        D, d = enc.embed_dim, cfg.decoder_width
        self.decoder_embed = nn.Linear(D, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = enc.decoder_pos_param(d)
        self.decoder_blocks = make_blocks(d, cfg.decoder_depth, cfg.decoder_heads)
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_pred = enc.prediction_head(d)
        nn.init.normal_(self.mask_token, std=0.02)
        init_weights([self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()])
        self._register_load_state_dict_pre_hook(self._old_keys)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def _old_keys(self, state: dict, prefix: str, *args) -> None:
        """Key map for method files of earlier versions: a table run's column heads moved under
        ``decoder_pred``; a series run's linear head (no decoder) cannot serve the decoder."""
        for key in [k for k in state if k.startswith(tuple(prefix + o for o in OLD_TABLE_KEYS))]:
            state[prefix + "decoder_pred." + key[len(prefix):]] = state.pop(key)
        if prefix + "head.weight" in state and prefix + "decoder_embed.weight" not in state:
            raise ValueError("this run's masked model predates the MAE decoder for series (selfsup before issue "
                             "19): its encoder still evaluates, embeds and exports, but reconstructions need a "
                             "run pretrained again")

    @staticmethod
    def warm_start_options(ws) -> dict:
        """Continuing from a ViTMAE checkpoint: its decoder's shape, mask ratio and target (``methods.warmstart``)."""
        return dict(ws.mae_decoder.config) if ws.mae_decoder is not None else {}

    def warm_start(self, ws) -> None:
        """The checkpoint's decoder, when it has one (the encoder is already loaded)."""
        if ws.mae_decoder is None:
            return
        missing, unexpected = self.load_state_dict(ws.mae_decoder.state, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"the MAE decoder of {ws.ref} does not fit (missing {missing[:4]}, unexpected "
                             f"{unexpected[:4]}); leave method.decoder_* to the reference")

    def decode(self, latent: torch.Tensor, restore: torch.Tensor, layout: tuple[int, ...] | None = None):
        """Encoded [first slot, visible] (B', 1 + n_keep, D) -> the head's predictions for all N tokens."""
        x = self.decoder_embed(latent)
        B, N = restore.shape
        hidden = self.mask_token.expand(B, N - (x.shape[1] - 1), -1)
        x_ = torch.cat([x[:, 1:], hidden], dim=1)
        x_ = torch.gather(x_, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        layout = layout or tuple(self.encoder.grid)
        pos = self.encoder.decoder_positions(layout, self.cfg.decoder_width, self.decoder_pos_embed)
        x = torch.cat([x[:, :1], x_], dim=1) + pos.to(x.device)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x)[:, 1:])

    def inputs(self, batch: dict):
        """What the encoder reads from ``batch``; images cropped and flipped in training (``augment``)."""
        x = self.spec.batch_input(batch)
        if self.images:
            if self.training and "crop" in self.cfg.augment:
                x = random_resized_crop(x, scale=CROP_SCALE)
            if self.training and "flip" in self.cfg.augment:
                x = horizontal_flip(x)
        return to_input(self.encoder, x)

    def forward(self, batch: dict, mask_ratio: float | None = None, generator: torch.Generator | None = None) -> dict:
        enc = self.encoder
        x = self.inputs(batch)
        B, N = enc.token_shape(x)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        device = self.mask_token.device
        keep, mask, restore = random_masking(B, N, ratio, device=device, generator=generator)
        mt = enc.masked_tokens(x, keep)
        latent = enc.forward_tokens(mt.tokens)  # only the visible tokens
        P = enc.num_prefix_tokens
        if P != 1:  # the decoder's first slot is the class token: registers dropped, else the visible tokens' mean
            first = latent[:, :1] if P else latent.mean(dim=1, keepdim=True)
            latent = torch.cat([first, latent[:, P:]], dim=1)
        pred = self.decode(latent, restore, mt.layout)
        loss, errors = enc.masked_loss(pred, mt.target, mask, self.cfg.norm_pix_loss)
        return {"loss": loss, "pred": pred, "target": mt.target, "mask": mask, "errors": errors}

    @torch.no_grad()
    def reconstruction_errors(self, batch: dict, passes: int = 8, seed: int = 0) -> torch.Tensor:
        """Per-token reconstruction error (B, tokens per sample): image patches, table cells, or each
        channel's series patches (channels one after another), averaged over ``passes`` random masks;
        NaN for a token never hidden or without a known value. A sample's anomaly score is its
        ``nanmean``."""
        x = self.spec.batch_input(batch)
        first = next(iter(x.values())) if isinstance(x, dict) else x
        g = torch.Generator(device=first.device).manual_seed(seed)
        total = count = None
        for _ in range(passes):
            errors = self.forward(batch, generator=g)["errors"].float().reshape(first.shape[0], -1)
            seen = ~torch.isnan(errors)
            total = torch.where(seen, errors, 0.0) + (0.0 if total is None else total)
            count = seen.float() + (0.0 if count is None else count)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        """Float images in [0, 1] (B, C, H, W) -> masked input, reconstruction and the two pasted, all
        (B, C, H, W) in [0, 1], and ``mask`` (B, H, W) bool, True on the pixels of hidden patches."""
        x = to_input(self.encoder, images)
        out = self.forward({self.spec.input_key: images}, mask_ratio)
        pred, mask = out["pred"], out["mask"]
        if self.cfg.norm_pix_loss:  # undo the per-patch normalisation with the true patch stats
            target = patchify(x, self.patch_size)
            pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        grid, p, C = self.encoder.grid_for(x), self.patch_size, self.encoder.in_chans
        recon = denormalize(unpatchify(pred, p, C, grid), *input_stats(self.encoder))
        m = unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * C), p, C, grid)
        images = images.expand_as(recon)  # a grey image shown as the encoder read it
        return {
            "masked": images * (1 - m),
            "reconstruction": recon,
            "pasted": images * (1 - m) + recon * m,
            "mask": m[:, 0] > 0.5,
        }


__all__ = ["MAE", "MAEConfig", "mae_loss", "patchify", "random_masking", "unpatchify"]
