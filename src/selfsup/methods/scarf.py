"""SCARF (Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature
Corruption", ICLR).

Each row is paired with a corrupted copy of itself: a random ``corruption_rate`` share of its
columns (0.6 in the paper) take the value that column has in another, random row of the training
data (a draw from the column's empirical marginal distribution). Both go through the encoder and
a 2-layer ReLU MLP head; the InfoNCE loss (eq. 1 of the paper, temperature 1) asks each row's
embedding to pick its own corrupted copy among the batch's corrupted copies, by cosine
similarity.

The marginals are the training table's when ``prepare`` saw it (the engine calls it with the
source before training; at most ``marginal_rows`` rows are kept), else the batch's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.methods.base import Method
from selfsup.modalities.table import corrupt


class SCARFConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corruption_rate: float = 0.6
    temperature: float = 1.0
    proj_hidden: int = 256
    proj_dim: int = 128
    marginal_rows: int = 65536


def scarf_loss(z: torch.Tensor, z_corrupt: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE of Bahri et al. 2022, eq. 1: mean over i of -log softmax_k(s_ik / tau)[i], with
    s_ik the cosine similarity of row i's embedding z_i (n, D) and row k's corrupted z_corrupt_k."""
    s = F.normalize(z, dim=1) @ F.normalize(z_corrupt, dim=1).T / temperature
    return F.cross_entropy(s, torch.arange(len(z), device=z.device))


class SCARF(Method):
    """Encoder + 2-layer ReLU MLP head; ``forward`` returns loss and the positive pair's cosine."""

    modalities = ("table",)
    Config = SCARFConfig

    def __init__(self, cfg: SCARFConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if spec.modality != "table":
            raise ValueError(f"scarf needs table data, not {spec.modality}")
        self.cfg, self.spec = cfg, spec
        self.encoder = build_encoder(encoder, spec)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.num_features, cfg.proj_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.proj_hidden, cfg.proj_dim),
        )
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None  # training marginals, not saved

    def prepare(self, source, run_dir=None) -> None:
        """Keep (up to ``marginal_rows`` rows of) the training table to draw corruptions from."""
        table = getattr(source, "table", None)
        if table is None:
            return
        n = len(table)
        pick = np.arange(n)
        if n > self.cfg.marginal_rows:
            pick = np.sort(np.random.default_rng(0).choice(n, self.cfg.marginal_rows, replace=False))
        self._pool = (torch.from_numpy(table.features[pick]), torch.from_numpy(table.categories[pick]))

    def forward(self, batch: dict) -> dict:
        x_num, x_cat = batch["features"], batch["categories"]
        if self._pool is not None:
            if self._pool[0].device != x_num.device:
                self._pool = (self._pool[0].to(x_num.device), self._pool[1].to(x_num.device))
            pool_num, pool_cat = self._pool
        else:
            pool_num, pool_cat = x_num, x_cat
        c_num, c_cat, _ = corrupt(x_num, x_cat, self.cfg.corruption_rate, pool_num, pool_cat)
        z = self.head(self.encoder(torch.cat([x_num, c_num]), torch.cat([x_cat, c_cat])))
        z1, z2 = z.chunk(2)
        loss = scarf_loss(z1, z2, self.cfg.temperature)
        return {"loss": loss, "pos_cosine": F.cosine_similarity(z1.detach(), z2.detach(), dim=1).mean()}


__all__ = ["SCARF", "SCARFConfig", "corrupt", "scarf_loss"]
