"""Vision Transformer (Dosovitskiy et al. 2021) in plain torch, with timm's parameter names.

One transformer for every modality: images are cut into patches, spectrograms are images with
one channel. The encoder can run on a subset of the patch tokens (MAE feeds it only the visible
ones), and attention goes through ``scaled_dot_product_attention`` unless the weights are asked
for (attention maps).

Parameter names follow ``timm.models.vision_transformer.VisionTransformer``:
``cls_token``, ``pos_embed`` (1, 1 + N, D), ``patch_embed.proj``, ``blocks.{i}.norm1``,
``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``,
``blocks.{i}.mlp.fc2``, ``norm``, ``head``; so a state dict moves between the two unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"width": 192, "depth": 12, "heads": 3},
    "small": {"width": 384, "depth": 12, "heads": 6},
    "base": {"width": 768, "depth": 12, "heads": 12},
    "large": {"width": 1024, "depth": 24, "heads": 16},
}


def sincos_pos_embed(dim: int, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding as in MAE: (1, [1 +] gh * gw, dim)."""
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
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb.unsqueeze(0)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D): a linear map of each patch, stored as a strided convolution.

    Computed as cut-into-patches + matmul, which is the same function, faster than the convolution
    on CPU, and lets MAE embed only the visible patches (``keep`` (B, n) -> (B, n, D)).
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if type(self.proj) is not nn.Conv2d:  # replaced or wrapped (e.g. by an adapter): call it
            x = self.proj(x).flatten(2).transpose(1, 2)
            return x if keep is None else torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        B, C, H, W = x.shape
        p = self.patch_size
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """(B, T, D) -> (B, T, D); with ``return_attention`` also the weights (B, heads, T, T)."""
        B, T, D = x.shape
        # split + view rather than permute + unbind: backward then builds the qkv gradient with one
        # concatenation instead of a stack and a permuted copy (~20% less attention time on CPU)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in self.qkv(x).split(D, dim=-1))
        if return_attention:
            attn = (q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5
            attn = attn.softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(B, T, D))
        return (out, attn) if return_attention else out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
        return x * keep / (1.0 - self.drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
            x = x + y
            return x + self.mlp(self.norm2(x)), attn
        x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT encoder. ``forward(x)`` gives pooled features (B, D), or logits with ``num_classes``.

    ``img_size`` only fixes the stored position-embedding grid; other sizes divisible by the patch
    size work by interpolating it. ``pool`` is "token" (CLS), "avg" (mean of patch tokens) or
    "token+avg" (both concatenated, 2 * D wide).
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
    ):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.pool = pool
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim), requires_grad=not sincos_pos)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim * (2 if pool == "token+avg" else 1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights(sincos_pos)

    def _init_weights(self, sincos_pos: bool) -> None:
        if sincos_pos:
            self.pos_embed.data.copy_(sincos_pos_embed(self.embed_dim, self.grid))
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def grid_for(self, x: torch.Tensor) -> tuple[int, int]:
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
        return H // p, W // p

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding (1, 1 + gh * gw, D), bicubically resized if the grid differs."""
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def embed_patches(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens with position embedding, (B, N, D); no CLS token.

        With ``keep`` (B, n) only those patches are embedded, (B, n, D): what MAE's encoder sees.
        """
        pos = self.pos_embed_for(self.grid_for(x))[:, 1:]
        if keep is not None:
            pos = torch.gather(pos.expand(x.shape[0], -1, -1), 1, keep.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        return self.patch_embed(x, keep) + pos

    def _prefix_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> (B, 1 + N, D) with the CLS token (and its position) first."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward_tokens(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens (B, N, D), optionally only ``keep`` (B, n) of them -> normed (B, 1 + n, D)."""
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        x = self._prefix_tokens(tokens)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int], norm: bool = False) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> patch tokens (B, N, D) after each block in ``indices`` (0-based), as timm.

        The blocks run only up to the deepest one asked for; the CLS token is dropped from the
        outputs; ``norm`` applies the final norm (trained for the last block's output only).
        """
        if not indices or not all(0 <= i < len(self.blocks) for i in indices):
            raise ValueError(f"layers {tuple(indices)} are not blocks of a {len(self.blocks)}-block encoder")
        last = max(indices)
        t = self._prefix_tokens(self.embed_patches(x))
        out = []
        for i, block in enumerate(self.blocks[: last + 1]):
            t = block(t)
            if i in indices:
                out.append((self.norm(t) if norm else t)[:, 1:])
        return out

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> normed tokens (B, 1 + N, D), CLS first."""
        return self.forward_tokens(self.embed_patches(x), keep)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, D) -> pooled (B, num_features) -> head."""
        if self.pool == "token":
            feats = tokens[:, 0]
        elif self.pool == "avg":
            feats = tokens[:, 1:].mean(dim=1)
        elif self.pool == "token+avg":
            feats = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
        else:
            raise ValueError(f"unknown pool {self.pool!r}; use token, avg or token+avg")
        return feats if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention weights of every block, each (B, heads, 1 + N, 1 + N)."""
        t = self._prefix_tokens(self.embed_patches(x))
        maps = []
        for block in self.blocks:
            t, attn = block(t, return_attention=True)
            maps.append(attn)
        return maps

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay (``train.optim``): embeddings 0, blocks 1..depth, final norm."""
        return len(self.blocks) + 1

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name``: patch/position embeddings and CLS 0, block i i + 1, the rest the top."""
        if name.startswith(("patch_embed", "cls_token", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers


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
    """Forward multiply-adds x 2 of the transformer blocks for ``tokens`` tokens (default all + CLS)."""
    T = (tokens if tokens is not None else model.num_patches) + 1
    D = model.embed_dim
    per_block = 2 * T * (4 * D * D + 2 * 4 * D * D) + 2 * 2 * T * T * D
    return float(model.depth * per_block + 2 * model.num_patches * model.in_chans * model.patch_size**2 * D)


__all__ = ["VisionTransformer", "vit", "sincos_pos_embed", "PRESETS", "vit_flops_per_image"]
