"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Self-distillation without labels: a student network (encoder + DINO head) is trained to match
the output distribution of a teacher on different views of the same image. The teacher is an
exponential moving average of the student (momentum 0.996 -> 1 on a cosine schedule) and sees
only the 2 global views; the student sees all views, including the small local crops
(multi-crop), so it learns local-to-global correspondence. Collapse is avoided by centering the
teacher's outputs (an EMA of their batch mean, averaged over processes) and sharpening them with
a low temperature (0.04, optionally warmed up), against the student's 0.1.

``self.encoder`` is the student's backbone (the one that gets gradients); the paper evaluates
the teacher, which is ``self.teacher_encoder``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.augment import dino_views, local_crop_size
from selfsup.data.inputs import rows
from selfsup.data.spec import InputSpec, to_float
from selfsup.encoders import EncoderConfig, build_encoder, to_input
from selfsup.methods.base import Method
from selfsup.methods.gather import all_reduce_mean
from selfsup.modalities import cat_inputs, data_type


class DINOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_dim: int = 4096  # the paper's 65536 is sized for ImageNet
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.3  # fraction of training (30 of 100 epochs in the paper)
    momentum: float = 0.996  # teacher EMA momentum at the start; cosine to 1
    center_momentum: float = 0.9
    freeze_last_layer: float = 0.01  # fraction of training with the last layer frozen (1 of 100 epochs)
    n_local: int = 6
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_size: int | None = None  # default: 96/224 of the image side, a multiple of the patch size


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation (Salimans & Kingma 2016): W = g v / |v|.

    Names ``weight_g`` (out, 1) and ``weight_v`` (out, in) match DINO's checkpoints.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        v, g = self.weight_v, self.weight_g
        if frozen:  # zero gradient but still part of the graph, so DDP sees the parameters used
            v, g = v.detach() + 0.0 * v, g.detach() + 0.0 * g
        return F.linear(x, g * v / v.norm(dim=1, keepdim=True))


class DINOHead(nn.Module):
    """MLP (GELU, ``layers`` deep) -> L2 normalise -> weight-normed linear to ``out_dim`` logits."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mlp: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mlp.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor, freeze_last: bool = False) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1), frozen=freeze_last)


def dino_loss(
    student_out: list[torch.Tensor],
    teacher_out: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """Cross entropy between teacher and student distributions over pairs of different views.

    student_out: V tensors (B, K), one per view, the global views first; teacher_out: G tensors
    (B, K) for the global views; center (1, K). The teacher is centred and sharpened
    (softmax((t - c) / teacher_temp)), the student softened (softmax(s / student_temp)); the loss
    is the mean over the (teacher view i, student view j != i) pairs of -sum_k P_t log P_s,
    averaged over the batch (Caron et al. 2021, eq. 3 and Algorithm 1).
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher_out]
    logps = [F.log_softmax(s / student_temp, dim=-1) for s in student_out]
    total, pairs = 0.0, 0
    for i, p in enumerate(targets):
        for j, logq in enumerate(logps):
            if i == j:
                continue
            total = total + (-(p * logq).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """Teacher momentum base -> 1 over training: 1 - (1 - base) (cos(pi step / total) + 1) / 2."""
    if total_steps <= 0:
        return base
    t = min(step / total_steps, 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


class DINO(Method):
    """Student (encoder + head) and EMA teacher; ``forward`` returns loss, teacher temperature, entropy."""

    Config = DINOConfig
    modalities = ("image", "table", "series", "audio")

    def __init__(self, cfg: DINOConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        self.cfg, self.spec, self.data_type = cfg, spec, data_type(spec)
        self.encoder = build_encoder(encoder, spec)
        self.head = DINOHead(self.encoder.num_features, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                             cfg.head_layers, cfg.norm_last_layer)
        self.teacher_encoder = copy.deepcopy(self.encoder)
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher_encoder.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad = False
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        # fraction of training done, for the schedules; -1 while the length of training is unknown
        self.register_buffer("progress", torch.zeros(()))
        multiple = getattr(self.encoder, "patch_size", 8)
        self.local_size = cfg.local_size or local_crop_size(spec.image_size, multiple)

    def warm_start(self, ws) -> None:
        """Continuing from public weights (``methods.warmstart``): the teacher starts as the loaded student."""
        self.teacher_encoder.load_state_dict(self.encoder.state_dict())
        self.teacher_head.load_state_dict(self.head.state_dict())

    def teacher_temperature(self, progress: float) -> float:
        """Linear warmup warmup_teacher_temp -> teacher_temp over the first teacher_temp_warmup of
        training; the final value when the length of training is unknown (progress < 0)."""
        w = self.cfg.teacher_temp_warmup
        if w <= 0 or progress >= w or progress < 0:
            return self.cfg.teacher_temp
        return self.cfg.warmup_teacher_temp + (self.cfg.teacher_temp - self.cfg.warmup_teacher_temp) * progress / w

    def forward(self, batch: dict) -> dict:
        x = self.spec.batch_input(batch)
        if self.data_type.images:
            B, n_local = x.shape[0], self.cfg.n_local
            views = dino_views(to_float(x), n_local, local_size=self.local_size,
                               global_scale=self.cfg.global_scale, local_scale=self.cfg.local_scale)
        else:  # two global views of the data type (no multi-crop outside images)
            views = self.data_type.views(x, 2, self.encoder)
            B, n_local = rows(views[0]), 0
        progress = float(self.progress)
        freeze = self.training and 0 <= progress < self.cfg.freeze_last_layer
        globals_ = to_input(self.encoder, cat_inputs(views[:2]))
        student = [self.head(self.encoder(globals_), freeze_last=freeze)]
        if n_local:  # one pass per resolution, as DINO's MultiCropWrapper
            student.append(self.head(self.encoder(to_input(self.encoder, torch.cat(views[2:]))), freeze_last=freeze))
        student_out = list(torch.cat(student).split(B))
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder(globals_))
        temp = self.teacher_temperature(progress)
        loss = dino_loss(student_out, list(teacher.split(B)), self.center, self.cfg.student_temp, temp)
        if self.training:
            self.update_center(teacher)
        with torch.no_grad():
            p = F.softmax((teacher - self.center) / temp, dim=-1)
            entropy = -(p * p.clamp(min=1e-12).log()).sum(dim=-1).mean()
        return {"loss": loss, "teacher_temp": torch.tensor(temp, device=loss.device), "teacher_entropy": entropy}

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """center <- m center + (1 - m) mean of the teacher outputs over the global batch."""
        batch_center = all_reduce_mean(teacher.mean(dim=0, keepdim=True))
        self.center.mul_(self.cfg.center_momentum).add_(batch_center * (1 - self.cfg.center_momentum))

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m teacher + (1 - m) student, parameter by parameter (buffers stay the teacher's)."""
        student = [*self.encoder.parameters(), *self.head.parameters()]
        teacher = [*self.teacher_encoder.parameters(), *self.teacher_head.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)

    def on_train_batch_end(self, step: int, total_steps: int) -> None:
        """After each optimiser step: EMA teacher with the cosine momentum, advance the schedules."""
        self.update_teacher(cosine_momentum(self.cfg.momentum, step, total_steps))
        self.progress.fill_(min(step / total_steps, 1.0) if total_steps > 0 else -1.0)


__all__ = ["DINO", "DINOConfig", "DINOHead", "WeightNormLinear", "dino_loss", "cosine_momentum"]
