"""Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners").

The encoder sees only a random subset of the patches (1 - mask_ratio of them); a light decoder
gets the encoded visible tokens plus a shared mask token at every hidden position and
reconstructs the pixels of the hidden patches. The loss is the mean squared error on hidden
patches only, optionally against per-patch normalised pixels (``norm_pix_loss``), which gives
better representations.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.augment import horizontal_flip, random_resized_crop
from selfsup.data.spec import InputSpec, denormalize
from selfsup.encoders import EncoderConfig, build_encoder, input_stats, to_input
from selfsup.encoders.layers import Block
from selfsup.encoders.vit import sincos_pos_embed

CROP_SCALE = (0.35, 1.0)  # MAE's random resized crop keeps at least 35% of the area (He et al. 2021, A.1)
IMAGE_MASK_RATIO = 0.75


class MAEConfig(BaseModel):
    """Options of masked modelling on every modality (``--method mae``; see ``methods/__init__.py``).

    ``mask_ratio`` None means the modality's own: 0.75 for images (He et al.), 0.4 for series
    (PatchTST), 0.3 for tables (VIME's masking probability). The decoder options apply to images
    and tables (series use PatchTST's linear head); ``norm_pix_loss`` and ``augment`` to images.
    """

    model_config = ConfigDict(extra="forbid")
    mask_ratio: float | None = None
    decoder_width: int = 128
    decoder_depth: int = 4
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    augment: Literal["none", "flip", "crop", "crop_flip"] = "crop_flip"


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p * p * C), patches in row-major order, pixels (p, p, C)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: torch.Tensor, p: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, p * p * C) -> (B, C, H, W); inverse of ``patchify``."""
    B = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(B, gh, gw, p, p, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(B, channels, gh * p, gw * p)


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


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Mean squared error over hidden patches. pred/target (B, N, P), mask (B, N) with 1 = hidden."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


class MAE(nn.Module):
    """ViT encoder + light ViT decoder; ``forward`` returns loss, pred (B, N, P) and mask (B, N)."""

    Config = MAEConfig

    def __init__(self, cfg: MAEConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if encoder.name != "vit":
            raise ValueError("mae needs a ViT encoder (encoder.name=vit)")
        if cfg.mask_ratio is None:
            cfg = cfg.model_copy(update={"mask_ratio": IMAGE_MASK_RATIO})
        self.cfg, self.spec = cfg, spec
        self.encoder = build_encoder(encoder, spec)
        enc = self.encoder
        self.patch_size = enc.patch_size
        D, d = enc.embed_dim, cfg.decoder_width
        self.decoder_embed = nn.Linear(D, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(d, enc.grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(d, cfg.decoder_heads) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_pred = nn.Linear(d, enc.patch_size**2 * enc.in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

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

    def decoder_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        """Fixed sin-cos decoder positions (1, 1 + gh * gw, d); computed anew for a grid other than the encoder's
        (a model continued at another image size than it was trained at)."""
        if grid == tuple(self.encoder.grid):
            return self.decoder_pos_embed
        return sincos_pos_embed(self.cfg.decoder_width, grid).to(self.decoder_pos_embed)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Encoded [CLS, visible] (B, 1 + n_keep, D) -> pixel predictions for all patches (B, N, P)."""
        x = self.decoder_embed(latent)
        B, N = restore.shape
        hidden = self.mask_token.expand(B, N - (x.shape[1] - 1), -1)
        x_ = torch.cat([x[:, 1:], hidden], dim=1)
        x_ = torch.gather(x_, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos(grid or tuple(self.encoder.grid))
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, batch: dict, mask_ratio: float | None = None) -> dict:
        images = batch["image"]
        if self.training and "crop" in self.cfg.augment:
            images = random_resized_crop(images, scale=CROP_SCALE)
        if self.training and "flip" in self.cfg.augment:
            images = horizontal_flip(images)
        x = to_input(self.encoder, images)
        gh, gw = self.encoder.grid_for(x)
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        keep, mask, restore = random_masking(x.shape[0], gh * gw, ratio, device=x.device)
        latent = self.encoder.forward_tokens(self.encoder.embed_patches(x, keep))  # only visible patches
        P = self.encoder.num_prefix_tokens
        if P != 1:  # the decoder's first slot is the class token: registers dropped, else the visible tokens' mean
            first = latent[:, :1] if P else latent.mean(dim=1, keepdim=True)
            latent = torch.cat([first, latent[:, P:]], dim=1)
        pred = self.decode(latent, restore, (gh, gw))
        loss = mae_loss(pred, patchify(x, self.patch_size), mask, self.cfg.norm_pix_loss)
        return {"loss": loss, "pred": pred, "mask": mask}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        """Float images in [0, 1] (B, C, H, W) -> masked input, reconstruction and the two pasted, all
        (B, C, H, W) in [0, 1], and ``mask`` (B, H, W) bool, True on the pixels of hidden patches."""
        x = to_input(self.encoder, images)
        out = self.forward({"image": images}, mask_ratio)
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
