"""The transformer's parts, shared by every encoder built on them (images, spectrograms, text,
tables, series): the one attention path, patch embedding, MLPs, layer scale, the pre-norm block and
attention pooling. Parameter names are timm's (``attn.qkv``, ``mlp.fc1``, ``ls1.gamma``...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """``scaled_dot_product_attention`` (B, heads, T, d) -> (B, heads, T, d), every attention's one path.

    bf16 inputs on the CPU are attended in fp32 and cast back: torch's bf16 CPU attention kernels
    ran 2-3x slower than its fp32 ones here (forward + backward, BENCHMARKS.md "bf16 on the CPU"),
    enough to undo what bf16 matmuls gain.
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu":
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D): a linear map of each patch, stored as a strided convolution.

    Computed as cut-into-patches + matmul, which is the same function, faster than the convolution
    on CPU, and lets MAE embed only the visible patches (``keep`` (B, n) -> (B, n, D)).
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

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
            out = attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(B, T, D))
        return (out, attn) if return_attention else out


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh", "silu")


def make_act(name: str) -> nn.Module:
    """Activation by name: gelu (exact), quick_gelu (OpenAI CLIP), gelu_tanh (SigLIP), silu."""
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")


def mlp_hidden(dim: int, ratio: float) -> int:
    """int(dim * ratio), immune to the float error of a ratio stored as hidden / dim (e.g. 4304 / 1152)."""
    return int(dim * ratio + 1e-6)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GluMlp(nn.Module):
    """Packed SwiGLU (timm's ``SwiGLUPacked``, DINOv2's ``w12``/``w3``): fc1 gives [x1, x2] (2 * h),
    out = fc2(silu(x1) * x2). ``hidden`` is fc1's width, 2 * h, as in timm."""

    def __init__(self, dim: int, hidden: int, act: str = "silu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.act(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale (Touvron et al. 2021, CaiT); timm's name ``gamma``."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth and optional layer scale."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        *,
        qkv_bias: bool = True,
        act: str = "gelu",
        norm_eps: float = 1e-6,
        init_values: float | None = None,
        mlp_layer: str = "mlp",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if mlp_layer == "swiglu":
            self.mlp = GluMlp(dim, mlp_hidden(dim, mlp_ratio), act)
        elif mlp_layer == "mlp":
            self.mlp = Mlp(dim, mlp_hidden(dim, mlp_ratio), act)
        else:
            raise ValueError(f"unknown mlp_layer {mlp_layer!r}; use mlp or swiglu")
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_path
        return x * keep / (1.0 - self.drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
            x = x + self.ls1(y)
            return x + self.ls2(self.mlp(self.norm2(x))), attn
        x = x + self._drop(self.ls1(self.attn(self.norm1(x))))
        return x + self._drop(self.ls2(self.mlp(self.norm2(x))))


class AttentionPoolLatent(nn.Module):
    """Multi-head attention pooling with one learned query (timm ``attn_pool``, SigLIP's MAP head).

    (B, T, D) -> (B, D): the latent attends to all tokens, then a residual MLP on a LayerNorm.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu", norm_eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden(dim, mlp_ratio), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        h = self.heads
        q = self.q(self.latent).view(1, 1, h, D // h).transpose(1, 2).expand(B, -1, -1, -1)
        k, v = self.kv(x).view(B, T, 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v).transpose(1, 2).reshape(B, 1, D)
        out = self.proj(out)
        return (out + self.mlp(self.norm(out)))[:, 0]


__all__ = [
    "ACTIVATIONS", "Attention", "AttentionPoolLatent", "Block", "GluMlp", "LayerScale", "Mlp", "PatchEmbed",
    "QuickGELU", "attention", "make_act", "mlp_hidden",
]
