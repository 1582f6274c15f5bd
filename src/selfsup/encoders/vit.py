"""Vision Transformer (Dosovitskiy et al. 2021) in plain torch, with timm's parameter names.

One transformer for every modality: images are cut into patches, spectrograms are images with
one channel. The encoder can run on a subset of the patch tokens (MAE feeds it only the visible
ones), and attention goes through ``scaled_dot_product_attention`` unless the weights are asked
for (attention maps).

Parameter names follow ``timm.models.vision_transformer.VisionTransformer``:
``cls_token``, ``reg_token``, ``pos_embed`` (1, [prefix +] N, D), ``patch_embed.proj``, ``norm_pre``,
``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.ls1.gamma``,
``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``, ``blocks.{i}.ls2.gamma``,
``norm``, ``fc_norm``, ``attn_pool.*``, ``head``; so a state dict moves between the two unchanged.

The options public models need, all off by default (the default network is selfsup's own):
layer scale (``init_values``, DINOv2), register tokens (``reg_tokens``, DINOv2 with registers),
no class token and attention pooling (``class_token=False``, ``pool="map"``, SigLIP), a LayerNorm
before the blocks (``pre_norm``, CLIP's ``ln_pre``), the activation (``act_layer``: "gelu",
"quick_gelu" for OpenAI CLIP, "gelu_tanh" for SigLIP, "silu"), packed SwiGLU MLPs
(``mlp_layer="swiglu"``, DINOv2 giant), the LayerNorm eps, biases of the patch embedding and qkv,
position embeddings that skip the prefix tokens (``no_embed_class``), and ``fc_norm`` (the final
norm after average pooling instead of on the tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.encoders.layers import AttentionPoolLatent, PatchEmbed
from selfsup.encoders.trunk import MaskedTokens, Trunk, check_pool, init_weights, make_blocks

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"width": 192, "depth": 12, "heads": 3},
    "small": {"width": 384, "depth": 12, "heads": 6},
    "base": {"width": 768, "depth": 12, "heads": 12},
    "large": {"width": 1024, "depth": 24, "heads": 16},
}


def sincos_pos_embed(dim: int, grid: tuple[int, int], cls_token: bool | int = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding as in MAE: (1, [P +] gh * gw, dim).

    ``cls_token`` True (or a count P) prepends that many zero rows for the prefix tokens.
    """
    gh, gw = grid
    assert dim % 4 == 0, "sin-cos position embedding needs a width divisible by 4"
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    ys, xs = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij"
    )
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angles = pos[:, None] * omega[None, :]
        out += [torch.sin(angles), torch.cos(angles)]
    emb = torch.cat(out, dim=1).float()
    if cls_token:
        emb = torch.cat([torch.zeros(int(cls_token), dim), emb], dim=0)
    return emb.unsqueeze(0)


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


def pixel_errors(pred: torch.Tensor, target: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Per-patch mean squared error (B, N) of pixel predictions (B, N, P), against per-patch normalised
    pixels with ``norm_pix`` (He et al. 2021: better representations)."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return (pred - target).pow(2).mean(dim=-1)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Mean squared error over hidden patches. pred/target (B, N, P), mask (B, N) with 1 = hidden."""
    return (pixel_errors(pred, target, norm_pix) * mask).sum() / mask.sum().clamp(min=1.0)


class VisionTransformer(Trunk):
    """ViT encoder. ``forward(x)`` gives pooled features (B, D), or logits with ``num_classes``.

    ``img_size`` only fixes the stored position-embedding grid; other sizes divisible by the patch
    size work by interpolating it (bicubic, ``align_corners=False``, in float32, the patch part only:
    what Hugging Face's ``interpolate_pos_encoding`` does for ViT, ViTMAE, DINOv2, CLIP and SigLIP;
    ``pos_antialias=True`` adds the antialiased kernel of ``Dinov2WithRegisters`` and timm's
    ``resample_abs_pos_embed``. What differs: facebookresearch/dinov2 itself passes a scale factor
    (n + 0.1) / N instead of the output size, so it samples the grid at slightly shifted points;
    tokens computed at the training size are unaffected). ``pool`` is "token" (CLS), "avg" (mean of patch
    tokens), "token+avg" (both concatenated, 2 * D wide) or "map" (attention pooling).

    Tokens are ordered [CLS, registers, patches]; ``num_prefix_tokens`` counts the first two.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        pool: str = "token",
        drop_path_rate: float = 0.0,
        sincos_pos: bool = True,
        *,
        class_token: bool = True,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pre_norm: bool = False,
        fc_norm: bool = False,
        init_values: float | None = None,
        act_layer: str = "gelu",
        mlp_layer: str = "mlp",
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        patch_bias: bool = True,
        pos_antialias: bool = False,
    ):
        super().__init__()
        check_pool(pool, class_token)
        if fc_norm and pool == "token+avg":
            raise ValueError("fc_norm works with one pooled vector (token, avg or map), not token+avg")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.pool, self.no_embed_class, self.pos_antialias = pool, no_embed_class, pos_antialias
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_pos_prefix = 0 if no_embed_class else int(class_token) + reg_tokens  # prefix rows of pos_embed
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_pos_prefix + self.num_patches, embed_dim), requires_grad=not sincos_pos
        )
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate, qkv_bias=qkv_bias,
                                  act=act_layer, norm_eps=norm_eps, init_values=init_values, mlp_layer=mlp_layer)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not fc_norm else nn.Identity()
        self.attn_pool = (
            AttentionPoolLatent(embed_dim, num_heads, mlp_ratio, act_layer, norm_eps) if pool == "map" else None
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.num_features = embed_dim * (2 if pool == "token+avg" else 1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights(sincos_pos)

    def _init_weights(self, sincos_pos: bool) -> None:
        if sincos_pos:
            self.pos_embed.data.copy_(
                sincos_pos_embed(self.embed_dim, self.grid, cls_token=self.num_pos_prefix)
            )
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=0.02)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.latent, std=self.embed_dim**-0.5)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        init_weights(self.modules())

    def grid_for(self, x: torch.Tensor) -> tuple[int, int]:
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
        return H // p, W // p

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding (1, [prefix +] gh * gw, D), the patch part bicubically resized if the grid differs."""
        if grid == self.grid:
            return self.pos_embed
        P = self.num_pos_prefix
        prefix_pos, patch_pos = self.pos_embed[:, :P], self.pos_embed[:, P:]
        patch_pos = patch_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos.float(), size=grid, mode="bicubic", align_corners=False, antialias=self.pos_antialias
        ).to(patch_pos.dtype)
        return torch.cat([prefix_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def embed_patches(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens with position embedding, (B, N, D); no prefix tokens.

        With ``keep`` (B, n) only those patches are embedded, (B, n, D): what MAE's encoder sees.
        """
        pos = self.pos_embed_for(self.grid_for(x))[:, self.num_pos_prefix:]
        if keep is not None:
            pos = torch.gather(pos.expand(x.shape[0], -1, -1), 1, keep.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        return self.patch_embed(x, keep) + pos

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> patch tokens with positions (B, N, D): the trunk's input."""
        return self.embed_patches(x)

    def format_intermediate(self, tokens: torch.Tensor, x: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """Patch tokens (B, N, D) as "NCHW" (B, D, gh, gw), "NHWC" (B, gh, gw, D) or "NLC" (B, N, D)."""
        if output_fmt == "NLC":
            return tokens
        gh, gw = self.grid_for(x)
        if output_fmt == "NHWC":
            return tokens.reshape(tokens.shape[0], gh, gw, -1)
        if output_fmt == "NCHW":
            return tokens.reshape(tokens.shape[0], gh, gw, -1).permute(0, 3, 1, 2)
        raise ValueError(f"output_fmt must be NCHW, NHWC or NLC, not {output_fmt!r}")

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> normed tokens (B, P + N, D): CLS, registers, then patches."""
        return self.forward_tokens(self.embed_patches(x), keep)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, *,
                              norm: bool = False, output_fmt: str = "NCHW", return_prefix_tokens: bool = False,
                              intermediates_only: bool = False):
        """``Trunk.forward_intermediates`` with timm's default layout: patch maps (B, D, gh, gw)."""
        if output_fmt not in ("NCHW", "NHWC", "NLC"):
            raise ValueError(f"output_fmt must be NCHW, NHWC or NLC, not {output_fmt!r}")
        return super().forward_intermediates(x, indices, norm=norm, output_fmt=output_fmt,
                                             return_prefix_tokens=return_prefix_tokens,
                                             intermediates_only=intermediates_only)

    # -- masked modelling (``trunk.Maskable``): hide 75 % of the patches, predict their pixels (MAE)
    mask_ratio = 0.75

    def token_shape(self, x: torch.Tensor) -> tuple[int, int]:
        gh, gw = self.grid_for(x)
        return x.shape[0], gh * gw

    def masked_tokens(self, x: torch.Tensor, keep: torch.Tensor) -> MaskedTokens:
        """Encoder input (B, C, H, W) -> the ``keep`` patches' tokens (B, n, D) (only they are embedded)
        and every patch's pixels (B, N, p * p * C)."""
        return MaskedTokens(self.embed_patches(x, keep), patchify(x, self.patch_size), self.grid_for(x))

    def prediction_head(self, width: int) -> nn.Module:
        return nn.Linear(width, self.patch_size**2 * self.in_chans)

    def decoder_pos_param(self, width: int) -> nn.Parameter:
        """Fixed 2-D sine-cosine decoder positions (1, 1 + N, width) on the stored grid (not trained)."""
        return nn.Parameter(sincos_pos_embed(width, self.grid), requires_grad=False)

    def decoder_positions(self, layout: tuple[int, ...], width: int, stored: nn.Parameter) -> torch.Tensor:
        """The stored positions, or computed anew for another grid (a model continued at another image size)."""
        if tuple(layout) == tuple(self.grid):
            return stored
        return sincos_pos_embed(width, tuple(layout)).to(stored)

    def masked_loss(self, pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor,
                    norm_target: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``mae_loss`` and the per-patch errors (B, N), NaN on visible patches."""
        errors = pixel_errors(pred, target, norm_target)
        loss = (errors * hidden).sum() / hidden.sum().clamp(min=1.0)
        return loss, torch.where(hidden > 0, errors, torch.full_like(errors, float("nan")))


def vit(
    size: str = "tiny",
    *,
    img_size: int = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    width: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    **kwargs,
) -> VisionTransformer:
    """Build a ViT from a preset name; ``width``/``depth``/``heads`` override the preset."""
    if size not in PRESETS and size != "custom":
        raise ValueError(f"unknown ViT size {size!r}; choose from {', '.join(PRESETS)} or custom")
    p = dict(PRESETS.get(size, PRESETS["tiny"]))
    p.update({k: v for k, v in {"width": width, "depth": depth, "heads": heads}.items() if v is not None})
    return VisionTransformer(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans,
        embed_dim=p["width"], depth=p["depth"], num_heads=p["heads"], **kwargs,
    )


def vit_flops_per_image(model: VisionTransformer, tokens: int | None = None) -> float:
    """Forward multiply-adds x 2 of the transformer blocks for ``tokens`` tokens (default all + prefix)."""
    T = (tokens if tokens is not None else model.num_patches) + model.num_prefix_tokens
    D = model.embed_dim
    per_block = 2 * T * (4 * D * D + 2 * 4 * D * D) + 2 * 2 * T * T * D
    return float(model.depth * per_block + 2 * model.num_patches * model.in_chans * model.patch_size**2 * D)


__all__ = [
    "PRESETS", "VisionTransformer", "mae_loss", "patchify", "pixel_errors", "sincos_pos_embed", "unpatchify", "vit",
    "vit_flops_per_image",
]
