"""Feature distillation: a small student learns to reproduce a frozen teacher's features.

A large public model (the teacher) is too slow to deploy; a small encoder (a ViT-Tiny, a ResNet-18)
trained on the user's unlabelled images to output what the teacher outputs inherits much of its
knowledge, in the user's domain. As in DINOv2's distillation of its smaller models from a frozen
ViT-g (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision", sec. 5:
the student matches the teacher's image-level and patch-level outputs) and LightlyTrain's
``distillation`` methods (a linear projection of the student's features regressed onto the
teacher's with a mean squared error, the student's patch grid interpolated to the teacher's), the
student is trained on both:

- global: the student's pooled features, projected linearly to the teacher's width, against the
  teacher's pooled features;
- patches: the student's patch map (ViT patch tokens or a CNN's last feature map) projected the
  same way, against the teacher's patch map resized (bilinear) to the student's grid.

Each term is ``1 - cosine`` and/or the MSE against the teacher's features passed through a
parameter-free LayerNorm (as the feature-distillation targets of Wei et al. 2022, "Contrastive
Learning Rivals Masked Image Modeling in Fine-tuning via Feature Distillation"), which puts every
teacher, whatever the scale of its features, on one scale. The teacher is frozen, in eval mode,
fed with its own normalisation (``encoders.to_input``) at its own resolution if asked, and is not
part of the state dict: the run stores the student and projections, and names the teacher
(``teacher``). With ``cache_teacher`` each image's teacher features are computed once, keyed by
the sample key, and kept in ``RUN/cache/`` (the student then sees the images un-augmented, since
cached targets belong to the original image).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup import distributed
from selfsup.data.augment import horizontal_flip, random_resized_crop
from selfsup.data.spec import InputSpec, to_float
from selfsup.encoders import EncoderConfig, build_encoder, patch_width, pooled_and_patches, resize_to, to_input
from selfsup.encoders.inference import eval_mode
from selfsup.methods.base import Method

LossKind = Literal["cosine", "mse", "cosine+mse"]


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str | None = None  # a model reference (encoders.hub) or a run folder; required
    teacher_dim: int | None = None  # the teacher's pooled width (filled from the teacher)
    teacher_patch_dim: int | None = None  # the teacher's patch-map width (filled from the teacher)
    teacher_image_size: int | None = None  # images are resized to this for the teacher; None: the student's size
    loss: LossKind = "cosine+mse"
    global_weight: float = 1.0
    patch_weight: float = 1.0  # 0: global features only
    target_norm: bool = True  # parameter-free LayerNorm on the teacher's features
    augment: Literal["none", "flip", "crop", "crop_flip"] = "crop_flip"  # one view, shared by both networks
    crop_scale: tuple[float, float] = (0.35, 1.0)
    cache_teacher: bool = False  # teacher features once per image (sample key); no augmentation then


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: LossKind = "cosine+mse",
                 target_norm: bool = True) -> torch.Tensor:
    """Distance between student rows (..., D) and teacher rows (..., D), averaged over the rows.

    The teacher rows are first normalised without parameters, t' = (t - mean(t)) / sqrt(var(t) + 1e-6)
    over D, when ``target_norm``. "cosine": mean of 1 - cos(s, t'); "mse": mean over rows and D of
    (s - t')^2; "cosine+mse": their sum.
    """
    t = F.layer_norm(teacher, teacher.shape[-1:], eps=1e-6) if target_norm else teacher
    s = student.reshape(-1, student.shape[-1]).float()
    t = t.reshape(-1, t.shape[-1]).float()
    loss = student.new_zeros((), dtype=torch.float32)
    if "cosine" in kind:
        loss = loss + (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    if "mse" in kind:
        loss = loss + (s - t).pow(2).mean()
    return loss


def distill_loss(student_global: torch.Tensor, teacher_global: torch.Tensor, student_patches: torch.Tensor | None,
                 teacher_patches: torch.Tensor | None, kind: LossKind = "cosine+mse", target_norm: bool = True,
                 global_weight: float = 1.0, patch_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """global (B, D) pairs and patch (B, N, D) pairs -> {"loss", "global", "patch"}.

    loss = global_weight * feature_loss(global) + patch_weight * feature_loss(patches); patches None
    (or patch_weight 0) leaves the patch term out (reported as 0).
    """
    g = feature_loss(student_global, teacher_global, kind, target_norm)
    p = torch.zeros_like(g)
    if patch_weight and student_patches is not None and teacher_patches is not None:
        p = feature_loss(student_patches, teacher_patches, kind, target_norm)
    return {"loss": global_weight * g + patch_weight * p, "global": g.detach(), "patch": p.detach()}


def teacher_options(teacher: nn.Module) -> dict[str, int]:
    """The widths the student's projections map to: ``teacher_dim`` (pooled), ``teacher_patch_dim``."""
    return {"teacher_dim": int(teacher.num_features), "teacher_patch_dim": patch_width(teacher)}


class Distill(Method):
    """Student encoder + linear projections to the teacher's widths; the frozen teacher kept aside."""

    Config = DistillConfig
    uses_teacher = True  # the API loads ``cfg.teacher`` and hands it over with ``set_teacher``
    teacher_options = staticmethod(teacher_options)  # options the API fills from the teacher

    def __init__(self, cfg: DistillConfig, encoder: EncoderConfig, spec: InputSpec):
        super().__init__()
        if cfg.teacher_dim is None or cfg.teacher_patch_dim is None:
            raise ValueError("distill needs the teacher's widths: give --teacher REF (method.teacher)")
        self.cfg, self.spec = cfg, spec
        self.encoder = build_encoder(encoder, spec)
        self.global_proj = nn.Linear(self.encoder.num_features, cfg.teacher_dim)
        self.patch_proj = nn.Linear(patch_width(self.encoder), cfg.teacher_patch_dim)
        object.__setattr__(self, "_teacher", None)  # not a submodule: not trained, not in the state dict
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache_path: Path | None = None
        self._cache_saved = 0

    # -- the teacher ---------------------------------------------------------------------------
    def set_teacher(self, teacher: nn.Module) -> None:
        """Adopt the frozen teacher (eval mode, no gradients)."""
        got = teacher_options(teacher)
        want = {"teacher_dim": self.cfg.teacher_dim, "teacher_patch_dim": self.cfg.teacher_patch_dim}
        if got != want:
            raise ValueError(f"teacher {self.cfg.teacher} has widths {got}, this run was built for {want}")
        for p in teacher.parameters():
            p.requires_grad = False
        object.__setattr__(self, "_teacher", teacher.eval())

    @property
    def teacher(self) -> nn.Module:
        if self._teacher is None:
            raise RuntimeError(f"no teacher loaded (method.teacher = {self.cfg.teacher}); the API sets it")
        return self._teacher

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] (B, C, H, W) -> teacher pooled (B, Dt) and patch map resized to ``grid`` (B, Dp, gh, gw)."""
        teacher = self.teacher
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with eval_mode(teacher):
            x = to_input(teacher, images)
            if self.cfg.teacher_image_size:
                x = resize_to(x, self.cfg.teacher_image_size)
            pooled, patches = pooled_and_patches(teacher, x)
        return pooled.float(), resize_to(patches.float(), grid)

    # -- cache ------------------------------------------------------------------------------------
    def prepare(self, source, run_dir: str | Path | None = None) -> None:
        """With ``cache_teacher``: where this rank's teacher features are kept, and those kept before."""
        if not self.cfg.cache_teacher or run_dir is None:
            return
        tag = json.dumps([self.cfg.teacher, self.cfg.teacher_image_size, getattr(source, "name", ""),
                          self.spec.image_size, self.spec.channels])
        digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
        folder = Path(run_dir) / "cache"
        for old in sorted(folder.glob(f"teacher-{digest}-rank*.pt")):
            self._cache.update(torch.load(old, map_location="cpu", weights_only=True))
        self._cache_saved = len(self._cache)
        self._cache_path = folder / f"teacher-{digest}-rank{distributed.global_rank()}.pt"

    def save_cache(self) -> None:
        """Write this rank's cached teacher features (atomically) when new ones were added."""
        if self._cache_path is None or len(self._cache) == self._cache_saved:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_path.with_suffix(".tmp")
        torch.save(self._cache, tmp)
        tmp.replace(self._cache_path)
        self._cache_saved = len(self._cache)

    def _targets(self, batch: dict, images: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = batch.get("key") if self.cfg.cache_teacher else None
        if not keys or len(keys) != len(images):
            return self.teacher_features(images, grid)
        if not all(k in self._cache for k in keys):
            pooled, patches = self.teacher_features(images, grid)
            for k, g, p in zip(keys, pooled.half().cpu(), patches.half().cpu(), strict=True):
                self._cache[k] = (g.clone(), p.clone())
            return pooled, patches
        got = [self._cache[k] for k in keys]
        return (torch.stack([g for g, _ in got]).to(images.device, torch.float32),
                torch.stack([p for _, p in got]).to(images.device, torch.float32))

    # -- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        images = to_float(batch["image"])
        if self.training and not self.cfg.cache_teacher:
            if "crop" in self.cfg.augment:
                images = random_resized_crop(images, scale=self.cfg.crop_scale)
            if "flip" in self.cfg.augment:
                images = horizontal_flip(images)
        pooled, patches = pooled_and_patches(self.encoder, to_input(self.encoder, images))
        t_pooled, t_patches = self._targets(batch, images, tuple(patches.shape[-2:]))
        s_patches = self.patch_proj(patches.flatten(2).transpose(1, 2))  # (B, N, Dp)
        return distill_loss(self.global_proj(pooled), t_pooled, s_patches, t_patches.flatten(2).transpose(1, 2),
                            self.cfg.loss, self.cfg.target_norm, self.cfg.global_weight, self.cfg.patch_weight)

    def on_train_batch_end(self, step: int, total_steps: int) -> None:
        if self.cfg.cache_teacher and step % 500 == 0:
            self.save_cache()

    def on_train_end(self) -> None:
        self.save_cache()


__all__ = ["Distill", "DistillConfig", "distill_loss", "feature_loss", "teacher_options"]
