"""PatchTST (Nie et al. 2023, "A Time Series is Worth 64 Words: Long-term Forecasting with
Transformers"): series cut into patches, each channel encoded on its own.

A series (B, C, T) is normalised per sample and channel (reversible instance normalisation,
RevIN, Kim et al. 2022: subtract the mean, divide by the std, both kept to undo it for
forecasts), cut into patches of ``patch_size`` steps every ``stride`` steps, and each patch is
linearly embedded. Channels are independent: the (B, C) series become B * C sequences of patch
tokens that share one transformer (``encoders.trunk``, with no prefix tokens) and one set of weights, which is
what lets PatchTST learn from multivariate data without mixing its channels.

NaN marks a step that was not observed (missing, or padding of a shorter series): RevIN skips
it, it is zero (the mean) in the patch, and a patch without any observed step is replaced by a
learned ``pad_token`` and left out of the pooled features. Patches after a series' last observed
one are padding: series of equal length go through the blocks together and without them, so a
padded series is encoded exactly as it would be alone. Positions are fixed 1-D sine-cosine
embeddings, so any number of patches works.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from selfsup.encoders.trunk import MaskedTokens, Trunk, gather_tokens, init_weights, make_blocks, masked_mse, sincos_1d


def revin_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (B, C, 1) of (B, C, T) over the observed (non-NaN) steps; 0 and 1 when none."""
    observed = ~torch.isnan(x)
    n = observed.sum(-1, keepdim=True)
    v = torch.where(observed, x, torch.zeros_like(x))
    mean = v.sum(-1, keepdim=True) / n.clamp(min=1)
    var = (torch.where(observed, x - mean, torch.zeros_like(x)) ** 2).sum(-1, keepdim=True) / n.clamp(min=1)
    std = torch.where(n > 0, (var + eps).sqrt(), torch.ones_like(var))
    return mean, std


def patchify(x: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """(B, C, T) -> (B, C, n, patch_size), n = ceil((T - patch_size) / stride) + 1 (at least 1); the
    end is padded with NaN so the last steps get a patch of their own instead of being dropped."""
    T = x.shape[-1]
    n = max(1, math.ceil(max(T - patch_size, 0) / stride) + 1)
    need = (n - 1) * stride + patch_size
    if need > T:
        x = torch.cat([x, x.new_full((*x.shape[:-1], need - T), float("nan"))], dim=-1)
    return x.unfold(-1, patch_size, stride)


class PatchTST(Trunk):
    """Channel-independent patch transformer. ``forward(x)`` (B, C, T) -> pooled (B, C * D).

    ``forward_features(x)`` gives the patch tokens (B, C, n, D) (no CLS token, as in PatchTST);
    the pooled features are each channel's mean over its observed patches, channels concatenated
    (so a multivariate classifier still knows which channel said what).
    """

    modality = "series"  # what it reads: ``encoders.to_input`` passes such inputs through

    def __init__(
        self,
        channels: int,
        patch_size: int = 12,
        stride: int | None = None,
        embed_dim: int = 128,
        depth: int = 3,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        revin: bool = True,
    ):
        super().__init__()
        self.channels, self.patch_size, self.stride = channels, patch_size, stride or patch_size
        self.embed_dim, self.depth, self.num_heads, self.revin = embed_dim, depth, num_heads, revin
        self.patch_embed = nn.Linear(patch_size, embed_dim)
        self.pad_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_token = self.reg_token = self.attn_pool = None  # no prefix tokens, as in PatchTST
        self.pool = "avg"
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = channels * embed_dim
        nn.init.normal_(self.pad_token, std=0.02)
        init_weights([self.patch_embed, *self.blocks.modules()])

    @staticmethod
    def _series(x) -> torch.Tensor:
        return x["series"] if isinstance(x, dict) else x

    def num_patches(self, length: int) -> int:
        return max(1, math.ceil(max(length - self.patch_size, 0) / self.stride) + 1)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RevIN: (B, C, T) -> (normalised, mean (B, C, 1), std (B, C, 1)); identity when ``revin`` is off."""
        if not self.revin:
            return x, torch.zeros_like(x[..., :1]), torch.ones_like(x[..., :1])
        mean, std = revin_stats(x)
        return (x - mean) / std, mean, std

    def patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, T) -> normalised patches (B, C, n, P) with NaN where not observed, mean, std."""
        x, mean, std = self.normalize(x.float())
        return patchify(x, self.patch_size, self.stride), mean, std

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, C, n, P) -> tokens (B * C, n, D) with positions; empty patches -> ``pad_token``."""
        B, C, n, P = patches.shape
        p = patches.reshape(B * C, n, P)
        empty = torch.isnan(p).all(-1, keepdim=True)
        t = self.patch_embed(torch.nan_to_num(p, nan=0.0))
        t = torch.where(empty, self.pad_token.to(t.dtype), t)
        return t + sincos_1d(n, self.embed_dim, t.device).to(t.dtype)

    @staticmethod
    def token_lengths(patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, C, n, P) -> (B * C,) patches up to the last one with an observed step (>= 1);
        the ones after it are padding of a shorter series."""
        observed = ~torch.isnan(patches).all(-1).flatten(0, 1)  # (B * C, n)
        idx = torch.arange(1, observed.shape[1] + 1, device=patches.device)
        return (observed * idx).amax(1).clamp(min=1)

    def tokenize(self, x) -> torch.Tensor:
        """Series (B, C, T) (or a batch dict) -> patch tokens with positions (B * C, n, D)."""
        return self.embed_patches(self.patches(self._series(x))[0])

    def forward_features(self, x) -> torch.Tensor:
        """Series (B, C, T) (or a batch dict) -> normed patch tokens (B, C, n, D)."""
        patches, _, _ = self.patches(self._series(x))
        B, C, n, _ = patches.shape
        tokens = self.forward_tokens(self.embed_patches(patches), lengths=self.token_lengths(patches))
        return tokens.reshape(B, C, n, -1)

    def pool_observed(self, tokens: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Tokens (B, C, n, D) -> (B, C * D): per channel the mean over patches with an observed step."""
        observed = (~torch.isnan(patches).all(-1)).unsqueeze(-1).to(tokens.dtype)  # (B, C, n, 1)
        pooled = (tokens * observed).sum(2) / observed.sum(2).clamp(min=1.0)
        return pooled.flatten(1)

    def forward(self, x) -> torch.Tensor:
        """Series (B, C, T) (or a batch dict) -> pooled features (B, num_features = C * D)."""
        patches, _, _ = self.patches(self._series(x))
        B, C, n, _ = patches.shape
        tokens = self.forward_tokens(self.embed_patches(patches), lengths=self.token_lengths(patches))
        return self.pool_observed(tokens.reshape(B, C, n, -1), patches)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, C, n, D) -> (B, C * D), each channel's mean over all its patches (``forward`` leaves
        out the patches with no observed step; it knows them from the input)."""
        return tokens.mean(2).flatten(1)

    def extra_no_weight_decay(self) -> set[str]:
        return {"pad_token"}

    # -- masked modelling (``trunk.Maskable``): hide 40 % of each channel's patches, predict their
    # normalised values (PatchTST's self-supervised task)
    mask_ratio = 0.4

    def token_shape(self, x) -> tuple[int, int]:
        B, C, T = self._series(x).shape
        return B * C, self.num_patches(T)

    def masked_tokens(self, x, keep: torch.Tensor) -> MaskedTokens:
        """Series (B, C, T) or a batch dict -> the ``keep`` patch tokens (B * C, n_keep, D) and every
        normalised patch (B * C, n, P) as targets (NaN where not observed)."""
        patches, _, _ = self.patches(self._series(x))
        B, C, n, P = patches.shape
        return MaskedTokens(gather_tokens(self.embed_patches(patches), keep), patches.reshape(B * C, n, P), (n,))

    def prediction_head(self, width: int) -> nn.Module:
        if self.stride != self.patch_size:
            raise ValueError("masked patch reconstruction needs non-overlapping patches: leave "
                             "encoder.series_stride unset (or equal to encoder.series_patch)")
        return nn.Linear(width, self.patch_size)

    def decoder_pos_param(self, width: int) -> None:
        return None  # fixed sine-cosine positions for any number of patches

    def decoder_positions(self, layout: tuple[int, ...], width: int, stored=None) -> torch.Tensor:
        """(1, 1 + n, width): a zero row for the decoder's first slot, then 1-D sine-cosine."""
        pos = sincos_1d(layout[0], width)
        return torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)

    def masked_loss(self, pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor,
                    norm_target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared error of the hidden patches' observed steps (``norm_target`` unused: RevIN already
        normalised them); per-patch errors (B * C, n)."""
        return masked_mse(pred, target, hidden)


__all__ = ["PatchTST", "patchify", "revin_stats", "sincos_1d"]  # sincos_1d from encoders.trunk
