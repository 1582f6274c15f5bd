"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two augmented views of each sample (images: crops and colour; other data types: their
``modalities`` views) go through the encoder and a small projection MLP; the NT-Xent
loss pulls the two projections of one image together and pushes them away from the other
2N - 2 projections of the batch. Under DDP the candidates are gathered from every process
(``gather_with_grad``), so the negatives are those of the global batch, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.augment import simclr_views
from selfsup.data.spec import InputSpec, to_float
from selfsup.encoders import EncoderConfig, build_encoder, to_input
from selfsup.methods.base import Method
from selfsup.methods.gather import gather_offset, gather_with_grad
from selfsup.modalities import cat_inputs, data_type


class SimCLRConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = 0.5
    proj_hidden: int = 2048
    proj_dim: int = 128
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    blur: bool | None = None  # None: only for images larger than 32 px (the paper's CIFAR recipe)
    gather: bool = True  # negatives from all processes under DDP


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = False) -> torch.Tensor:
    """Normalised temperature-scaled cross entropy (Chen et al. 2020, eq. 1), averaged over anchors.

    z1, z2 (n, D): projections of the two views (L2-normalised here). Each of the 2n anchors has
    its other view as the positive and the 2N - 2 other projections as negatives, with
    sim = cosine / temperature. With ``gather`` the candidates come from all processes
    (N = world size * n) while the anchors stay local, which gives DDP the single-process gradient.
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    a1, a2 = (gather_with_grad(z1), gather_with_grad(z2)) if gather else (z1, z2)
    N = a1.shape[0]
    idx = torch.arange(n, device=z1.device) + (gather_offset(n) if gather else 0)  # anchors' global rows
    candidates = torch.cat([a1, a2])  # (2N, D): view 1 of every image, then view 2
    logits = torch.cat([z1, z2]) @ candidates.T / temperature  # (2n, 2N)
    self_col = torch.cat([idx, N + idx])
    positive = torch.cat([N + idx, idx])
    rows = torch.arange(2 * n, device=z1.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, self_col] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive)


class SimCLR(Method):
    """Encoder + projection MLP (Linear-BN-ReLU-Linear); ``forward`` returns loss and positive cosine."""

    Config = SimCLRConfig
    modalities = ("image", "table", "series", "audio")

    def __init__(self, cfg: SimCLRConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        self.cfg, self.spec, self.data_type = cfg, spec, data_type(spec)
        self.encoder = build_encoder(encoder, spec)
        F_ = self.encoder.num_features
        self.projector = nn.Sequential(
            nn.Linear(F_, cfg.proj_hidden, bias=False),
            nn.BatchNorm1d(cfg.proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.proj_hidden, cfg.proj_dim),
        )

    def forward(self, batch: dict) -> dict:
        x = self.spec.batch_input(batch)
        if self.data_type.images:
            views = simclr_views(to_float(x), scale=self.cfg.crop_scale, jitter=self.cfg.jitter, blur=self.cfg.blur)
        else:  # the data type's views: SCARF corruption of rows, jittered series, SpecAugment
            views = self.data_type.views(x, 2, self.encoder)
        z = self.projector(self.encoder(to_input(self.encoder, cat_inputs(list(views)))))
        z1, z2 = z.chunk(2)
        loss = nt_xent_loss(z1, z2, self.cfg.temperature, gather=self.cfg.gather)
        pos = F.cosine_similarity(z1.detach(), z2.detach(), dim=1).mean()
        return {"loss": loss, "pos_cosine": pos}


__all__ = ["SimCLR", "SimCLRConfig", "nt_xent_loss"]
