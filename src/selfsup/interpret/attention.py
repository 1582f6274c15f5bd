"""Where a ViT looks: last-layer CLS attention per head, and attention rollout.

Last-layer CLS attention (as in DINO's figures) is the softmax row of the CLS token in the final
block, one map per head, over the patch grid. Attention rollout (Abnar & Zuidema 2020,
"Quantifying Attention Flow in Transformers") follows attention through every block: average the
heads, add the identity for the residual connection, renormalise the rows, and multiply the
per-layer matrices from the first block to the last. The CLS row of the product says how much
each input patch flowed into the CLS token.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from selfsup.data.spec import as_tensor, to_float
from selfsup.encoders import to_input
from selfsup.encoders.inference import eval_mode
from selfsup.encoders.vit import VisionTransformer


def encoder_input(encoder: nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (B, C, H, W) -> what ``encoder`` reads, float (B, C, H, W)."""
    x = as_tensor(images)
    return to_input(encoder, to_float(x.clone() if x.dtype == torch.uint8 else x))


def cls_attention(attentions: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """Last block's CLS -> patch attention per head.

    ``attentions``: per block (B, heads, 1 + N, 1 + N), N = gh * gw. Returns (B, heads, gh, gw);
    each head's map sums to 1 minus the CLS token's attention to itself.
    """
    last = attentions[-1]
    return last[:, :, 0, 1:].reshape(last.shape[0], last.shape[1], *grid)


def attention_rollout(attentions: list[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Joint attention from input tokens to every layer-L token, (B, 1 + N, 1 + N).

    Per block: A = mean over heads; A = A + I (with ``residual``); rows renormalised to sum to 1;
    rollout = A_L @ ... @ A_1. A product of row-stochastic matrices is row-stochastic, so every
    row of the result sums to 1.
    """
    rollout = None
    for attn in attentions:
        a = attn.float().mean(dim=1)
        if residual:
            a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs at least one block")
    return rollout


def rollout_maps(attentions: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """CLS row of the rollout over the patches, renormalised to sum to 1: (B, gh, gw)."""
    cls = attention_rollout(attentions)[:, 0, 1:]
    cls = cls / cls.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return cls.reshape(cls.shape[0], *grid)


@torch.no_grad()
def vit_attention(
    encoder: VisionTransformer, images: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (B, C, H, W) -> (per-head CLS attention (B, heads, gh, gw), rollout (B, gh, gw)).

    Runs on the encoder's device in eval mode (its mode is restored); outputs are float32 on the CPU.
    """
    p = next(encoder.parameters())
    x = encoder_input(encoder, images).to(device=p.device, dtype=p.dtype)
    grid = encoder.grid_for(x)
    with eval_mode(encoder):
        maps = encoder.attention_maps(x)
    return cls_attention(maps, grid).float().cpu(), rollout_maps(maps, grid).float().cpu()


def is_vit(module: object) -> bool:
    """True for encoders that can give attention maps (our ViT, or anything with its interface)."""
    return isinstance(module, VisionTransformer) or (
        hasattr(module, "attention_maps") and hasattr(module, "grid_for")
    )


__all__ = [
    "encoder_input",
    "cls_attention",
    "attention_rollout",
    "rollout_maps",
    "vit_attention",
    "is_vit",
]
