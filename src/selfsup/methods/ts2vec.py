"""TS2Vec (Yue et al. 2022, "TS2Vec: Towards Universal Representation of Time Series", AAAI) on
PatchTST tokens.

Two overlapping crops of each series are encoded separately (contextual consistency: a time step
seen in two different contexts should be represented alike), each with half of its input tokens
masked (timestamp masking: the token's content is zeroed, its position kept). On the overlap the
hierarchical contrastive loss compares the two views' representations: at each scale an
instance-wise term (a time step against the same time step of the other series in the batch)
and a temporal term (against the other time steps of the same series), then the representations
are max-pooled over time by 2 and the next scale is compared, down to one step (section 3.3,
Algorithm 1 of the paper). Similarities are plain dot products, as in the paper.

Here a time step is a patch token and, channels being independent in PatchTST, each (series,
channel) is an instance; crops are taken in whole patches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.series import sincos_1d
from selfsup.methods.base import Method


class TS2VecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = 0.5  # weight of the instance-wise term; 1 - alpha for the temporal one
    temporal_unit: int = 0  # the temporal term starts at this scale (0: every scale)
    mask_prob: float = 0.5  # timestamp masking: share of input tokens zeroed in each view


def _off_diagonal_log_softmax(sim: torch.Tensor) -> torch.Tensor:
    """(..., M, M) similarities -> -log softmax over each row without its diagonal, (..., M, M - 1):
    column j of row i is candidate j for j < i and candidate j + 1 for j >= i."""
    logits = torch.tril(sim, diagonal=-1)[..., :-1] + torch.triu(sim, diagonal=1)[..., 1:]
    return -F.log_softmax(logits, dim=-1)


def instance_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Instance-wise term (eq. 3): at each time step t, instance i of view 1 has instance i of view 2
    as its positive and the other 2B - 2 representations of step t as negatives (and the reverse).
    z1, z2 (B, T, D); 0 for a batch of one."""
    B = z1.shape[0]
    if B == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)  # (T, 2B, D)
    nll = _off_diagonal_log_softmax(z @ z.transpose(1, 2))  # (T, 2B, 2B - 1)
    i = torch.arange(B, device=z1.device)
    return (nll[:, i, B + i - 1].mean() + nll[:, B + i, i].mean()) / 2


def temporal_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Temporal term (eq. 2): step t of view 1 has step t of view 2 as its positive and the other
    2T - 2 steps of the same instance (both views) as negatives (and the reverse). z1, z2 (B, T, D)."""
    T = z1.shape[1]
    if T == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=1)  # (B, 2T, D)
    nll = _off_diagonal_log_softmax(z @ z.transpose(1, 2))  # (B, 2T, 2T - 1)
    t = torch.arange(T, device=z1.device)
    return (nll[:, t, T + t - 1].mean() + nll[:, T + t, t].mean()) / 2


def hierarchical_contrastive_loss(
    z1: torch.Tensor, z2: torch.Tensor, alpha: float = 0.5, temporal_unit: int = 0
) -> torch.Tensor:
    """Algorithm 1 of Yue et al. 2022: the two terms at every scale, max-pooling time by 2 between
    scales until one step is left (where only the instance term applies); averaged over scales.
    z1, z2 (B, T, D): the two views' representations of the same T time steps."""
    loss, scales = z1.new_zeros(()), 0
    while z1.shape[1] > 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        if scales >= temporal_unit and alpha != 1:
            loss = loss + (1 - alpha) * temporal_contrastive_loss(z1, z2)
        scales += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if z1.shape[1] == 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        scales += 1
    return loss / scales


def crop_pair(n: int, batch: int, temporal_unit: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """TS2Vec's random cropping of n steps: (starts (2, B), lengths (2,), crop).

    View v of instance b is steps [starts[v, b], starts[v, b] + lengths[v]); the last ``crop`` steps
    of view 1 are the first ``crop`` of view 2 (the overlap), and every instance is shifted by its
    own random offset, as in the paper's code."""
    crop = int(rng.integers(min(2 ** (temporal_unit + 1), n), n + 1))
    left = int(rng.integers(0, n - crop + 1))
    right = left + crop
    eleft = int(rng.integers(0, left + 1))
    eright = int(rng.integers(right, n + 1))
    offset = rng.integers(-eleft, n - eright + 1, size=batch)
    return np.stack([offset + eleft, offset + left]), np.array([right - eleft, eright - left]), crop


def take_per_row(x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """x (B, T, ...) -> (B, length, ...) with row b taken from starts[b]."""
    idx = starts[:, None] + torch.arange(length, device=x.device)[None]
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


class TS2Vec(Method):
    """PatchTST encoder trained with TS2Vec's crops, timestamp masking and hierarchical loss."""

    modalities = ("series",)
    Config = TS2VecConfig

    def __init__(self, cfg: TS2VecConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if spec.modality != "series":
            raise ValueError(f"ts2vec needs series data, not {spec.modality}")
        self.cfg, self.spec = cfg, spec
        self.encoder = build_encoder(encoder, spec)

    def encode_view(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B', n, P) -> representations (B', n, D), with timestamp masking in training."""
        enc = self.encoder
        t = enc.embed_patches(patches.unsqueeze(1))  # (B', n, D), positions from the crop's start
        if self.training and self.cfg.mask_prob > 0:
            pos = sincos_1d(t.shape[1], t.shape[2], t.device).to(t.dtype)
            masked = torch.rand(t.shape[:2], device=t.device) < self.cfg.mask_prob
            t = torch.where(masked.unsqueeze(-1), pos.expand_as(t), t)
        return enc.forward_tokens(t)

    def forward(self, batch: dict, rng: np.random.Generator | None = None) -> dict:
        enc = self.encoder
        patches, _, _ = enc.patches(batch["series"])  # (B, C, n, P)
        B, C, n, P = patches.shape
        n = int(enc.token_lengths(patches).min())  # crops stay inside every series' observed patches
        if n < 2:
            raise ValueError(f"ts2vec needs series of at least 2 patches ({enc.patch_size + enc.stride} steps)")
        x = patches[:, :, :n].reshape(B * C, n, P)
        rng = rng or np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        starts, lengths, crop = crop_pair(n, B * C, self.cfg.temporal_unit, rng)
        s1, s2 = (torch.as_tensor(s, device=x.device) for s in starts)
        z1 = self.encode_view(take_per_row(x, s1, int(lengths[0])))[:, -crop:]
        z2 = self.encode_view(take_per_row(x, s2, int(lengths[1])))[:, :crop]
        loss = hierarchical_contrastive_loss(z1.float(), z2.float(), self.cfg.alpha, self.cfg.temporal_unit)
        return {"loss": loss, "crop_patches": torch.tensor(float(crop))}


__all__ = [
    "TS2Vec", "TS2VecConfig", "hierarchical_contrastive_loss", "instance_contrastive_loss",
    "temporal_contrastive_loss",
]
