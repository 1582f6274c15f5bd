"""Plain fine-tuning: a copy of the encoder plus a linear head, trained end to end on few labels.

The same function and recipe train the supervised-from-scratch baseline (a freshly initialised
encoder of the same architecture), so SSL and scratch differ only in their starting weights.
Optimiser as in MAE fine-tuning (He et al. 2021): AdamW, linear warmup then cosine decay, no
weight decay on biases, norms and position embeddings, optional layer-wise lr decay for ViTs
(Bao et al. 2021, BEiT). Augmentation is a random shift by up to an eighth of the side (CIFAR's
4 px of 32): replicate padding, then a random crop back to size, done on the batch in torch.
Horizontal flips are off by default because they change the meaning of digits and text.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.spec import normalize, to_float
from selfsup.evaluate.features import as_tensor, module_device


@dataclass
class FinetuneRecipe:
    """Fine-tuning hyper-parameters; the defaults suit tens to thousands of small labelled images."""

    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    label_smoothing: float = 0.1
    layer_decay: float = 1.0  # ViT layer-wise lr decay; 1.0 = off
    augment: bool = True
    shift: float = 0.125  # max translation as a fraction of the image side (CIFAR's 4 px of 32)
    flip: bool = False


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of (B, C, H, W) by up to ``shift`` pixels: replicate-pad, random crop."""
    if shift <= 0:
        return x
    B, C, H, W = x.shape
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    oy, ox = (torch.randint(0, 2 * shift + 1, (2, B), generator=generator)).to(x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B, 1, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: no decay on 1-D params and ``no_weight_decay()`` names; ViT layer-wise lr scale.

    With ``layer_decay`` < 1 and an encoder that has ``blocks``, the patch embedding, CLS token
    and position embedding get layer 0, block i layer i + 1, the rest (final norm, head) the top
    layer L = depth + 1; a parameter's lr is scaled by layer_decay ** (L - layer).
    """
    encoder = model.encoder if hasattr(model, "encoder") else model
    skip = {f"encoder.{n}" for n in getattr(encoder, "no_weight_decay", set)()}
    depth = len(encoder.blocks) if hasattr(encoder, "blocks") else 0

    def layer(name: str) -> int:
        if name.startswith(("encoder.patch_embed", "encoder.cls_token", "encoder.pos_embed")):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return depth + 1

    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in skip
        lid = layer(name) if depth and layer_decay != 1.0 else depth + 1
        g = groups.setdefault((lid, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                             "lr_scale": layer_decay ** (depth + 1 - lid)})
        g["params"].append(p)
    return list(groups.values())


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class Classifier(nn.Module):
    """Encoder (B, C, H, W) -> (B, F) followed by a linear head to C classes."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def finetune(
    encoder: nn.Module,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_images: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    recipe: FinetuneRecipe | None = None,
    device: str | torch.device | None = None,
    eval_batch_size: int = 256,
) -> torch.Tensor:
    """Fine-tune a deep copy of ``encoder`` (left untouched) + a linear head; test probabilities (M, C).

    train_images uint8 (N, C, H, W), train_labels (N,) in [0, C), test_images uint8 (M, C, H, W).
    ``seed`` fixes the head, the batches, the augmentation and dropout; the caller's global RNG
    state is restored afterwards. ``device`` defaults to the encoder's.
    """
    r = recipe or FinetuneRecipe()
    device = torch.device(device) if device is not None else module_device(encoder)
    x_train, x_test = as_tensor(train_images).to(device), as_tensor(test_images)
    y_train = torch.as_tensor(train_labels).long().to(device)
    n = len(x_train)
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = Classifier(copy.deepcopy(encoder), num_classes).to(device)
        if not any(p.requires_grad for p in model.encoder.parameters()):
            warnings.warn("the encoder has no trainable parameters (frozen?): only the head is trained", stacklevel=2)
        groups = param_groups(model, r.weight_decay, r.layer_decay)
        opt = torch.optim.AdamW(groups, lr=r.lr, betas=(0.9, 0.999))
        warmup = max(1, int(r.warmup_frac * r.steps))
        model.train()
        for step in range(r.steps):
            for group in opt.param_groups:
                group["lr"] = r.lr * lr_factor(step, r.steps, warmup) * group["lr_scale"]
            idx = torch.randperm(n, generator=g)[: r.batch_size].to(device)
            x = to_float(x_train[idx])
            if r.augment:
                x = random_shift(x, max(1, round(r.shift * x.shape[-1])) if r.shift > 0 else 0, g)
                if r.flip:
                    flip = (torch.rand(len(x), generator=g) < 0.5).to(device)[:, None, None, None]
                    x = torch.where(flip, x.flip(-1), x)
            loss = F.cross_entropy(model(normalize(x)), y_train[idx], label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = [
                model(normalize(to_float(x_test[i : i + eval_batch_size].to(device)))).float().softmax(1).cpu()
                for i in range(0, len(x_test), eval_batch_size)
            ]
    return torch.cat(out) if out else torch.empty(0, num_classes)


__all__ = ["FinetuneRecipe", "finetune", "random_shift", "param_groups", "lr_factor", "Classifier"]
