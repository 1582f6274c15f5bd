"""Classifier training: an encoder plus a linear head, trained on few labels.

The recipe follows MAE's fine-tuning (He et al. 2021, "Masked Autoencoders Are Scalable Vision
Learners", appendix A.1): AdamW, a linear warmup, label smoothing, no weight decay on biases,
norms and position embeddings, and optional layer-wise learning-rate decay (Bao et al. 2021,
BEiT; ``train.optim``). Augmentation is a random shift by up to an eighth of the side (CIFAR's 4
px of 32), done on the batch in torch; flips are off by default because they change the meaning
of digits and text. Augmentation is for images only: table rows and series go in as they are
(``data.inputs``: every function here takes any modality's inputs, a tensor or a dict of them).

Training length is not a fixed number of steps (which starves whichever model needs more passes,
usually the one trained from scratch, and gives fewer passes per label as labels grow): after the
warmup the learning rate stays constant and ``train_classifier`` runs until the score on held-out
labels stops improving (``patience`` validations), or, with no labels to hold out, until the
training loss stops improving; a fixed length is used only to re-train for a length chosen that
way. ``max_steps`` is a safety cap, reported when reached. How the learning rate and the length
are chosen, the same way for every encoder, is ``adapt.tune``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.inputs import Inputs, is_images, rows, take
from selfsup.data.spec import to_float
from selfsup.encoders import to_input
from selfsup.encoders.inference import batch_input, encode_images
from selfsup.hardware import autocast
from selfsup.train.optim import param_groups


@dataclass
class FinetuneRecipe:
    """Fine-tuning hyper-parameters; the defaults suit tens to thousands of small labelled images.

    ``lr`` is the centre of the learning-rate grid ``lr * m for m in lr_grid`` that ``adapt.tune``
    tries on held-out labels; training stops ``patience`` validations (one every ``eval_every``
    steps, 0 = every epoch but at least 5 steps) after its best held-out score.
    """

    lr: float = 1e-3
    lr_grid: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    batch_size: int = 64
    weight_decay: float = 0.05
    warmup_steps: int = 10
    label_smoothing: float = 0.1
    layer_decay: float = 1.0  # ViT layer-wise lr decay; 1.0 = off
    augment: bool = True
    shift: float = 0.125  # max translation as a fraction of the image side (CIFAR's 4 px of 32)
    flip: bool = False
    eval_every: int = 0
    patience: int = 10
    min_steps: int = 100  # never stopped before: a model at chance for its first validations may yet learn
    max_steps: int = 5000  # a safety cap, not a training length: reaching it is reported
    val_fraction: float = 0.2  # labels held out to choose the lr and the length
    precision: str = "auto"  # autocast of the forward pass (selfsup.hardware); fp32 master weights


# LoRA trains few, zero-started parameters and wants a larger step than full fine-tuning (Hu et al.
# 2021 use about 10x); on 5-shot digits 1e-2 beat 1e-3 and 3e-3 clearly and 3e-2 diverged.
LORA_LR_SCALE = 10.0


def lora_recipe(recipe: FinetuneRecipe) -> FinetuneRecipe:
    """The LoRA counterpart of a fine-tuning recipe: LORA_LR_SCALE x the lr, no layer decay (frozen encoder)."""
    return replace(recipe, lr=recipe.lr * LORA_LR_SCALE, layer_decay=1.0)


# What `selfsup adapt` trains with: MAE's layer decay 0.75 for full fine-tuning; LoRA trains only
# the adapters and the head.
ADAPT_RECIPES = {
    "finetune": FinetuneRecipe(layer_decay=0.75),
    "lora": lora_recipe(FinetuneRecipe()),
}


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


def lr_factor(step: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then constant: early stopping decides the length."""
    return min(1.0, (step + 1) / max(1, warmup))


def epoch_steps(n: int, batch_size: int) -> float:
    """Optimizer steps per pass over ``n`` labels (a batch is a random ``min(batch_size, n)`` of them)."""
    return n / min(batch_size, n)


class Classifier(nn.Module):
    """Encoder (B, C, H, W) (or a table's / series' batch) -> (B, F) followed by a linear head to C classes."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Inputs) -> torch.Tensor:
        return self.head(self.encoder(x))

    @torch.no_grad()
    def predict_proba(self, images: Inputs, batch_size: int = 256, precision: str = "auto") -> torch.Tensor:
        """uint8 images (N, C, H, W) (or any modality's inputs) on any device -> class probabilities
        (N, classes), float32 on the CPU.

        Runs in eval mode; the train/eval mode is restored afterwards.
        """
        return encode_images(self, images, lambda x: self(x).float().softmax(1), batch_size=batch_size,
                             empty=(0, self.head.out_features), precision=precision)


@torch.no_grad()
def _validate(model: Classifier, images: Inputs, labels: torch.Tensor,
              precision: str = "auto") -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` on held-out labelled images (M, C, H, W), (M,)."""
    probs = model.predict_proba(images, precision=precision)
    y = labels.cpu()
    return float((probs.argmax(1) == y).double().mean()), float(F.nll_loss(probs.clamp_min(1e-12).log(), y))


def train_classifier(
    model: Classifier,
    images: Inputs,
    labels: torch.Tensor,
    recipe: FinetuneRecipe,
    *,
    generator: torch.Generator,
    val: tuple[Inputs, torch.Tensor] | None = None,
    steps: int | None = None,
) -> dict:
    """Train ``model`` in place on uint8 ``images`` (N, C, H, W) (or any modality's inputs) and
    ``labels`` (N,), both on its device.

    ``generator`` draws the batches and the augmentation (dropout and drop-path use the global
    RNG). How long:

    - ``steps``: exactly that many (re-training for a length chosen on held-out labels);
    - ``val`` (images, labels), a held-out part of the labelled set (never the test set): scored
      every validation period; training stops ``recipe.patience`` periods after the best score
      (higher accuracy, then lower loss), but not before ``recipe.min_steps``, and the best
      weights are restored;
    - neither: stops ``recipe.patience`` periods after the mean training loss of a period last
      fell by more than 1 %.

    ``recipe.max_steps`` caps every mode. Returns {"steps", "best_step", "val_top1", "val_loss",
    "stopped" ("steps", "patience", "train_loss" or "cap"), "history"}.
    """
    r = recipe
    groups = param_groups(model, r.weight_decay, r.layer_decay)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])  # one kernel per group
    opt = torch.optim.AdamW(groups, lr=r.lr, betas=(0.9, 0.999), fused=fused)
    n = rows(images)
    period = r.eval_every or max(5, math.ceil(epoch_steps(n, r.batch_size)))
    limit = min(steps, r.max_steps) if steps is not None else r.max_steps
    best, best_state, best_step, stale, history, losses = None, None, None, 0, [], []
    stopped = "steps" if steps is not None else "cap"
    model.train()
    step = 0
    for step in range(limit):
        for group in opt.param_groups:
            group["lr"] = r.lr * lr_factor(step, r.warmup_steps) * group["lr_scale"]
        idx = torch.randperm(n, generator=generator)[: r.batch_size].to(labels.device)
        batch = take(images, idx)
        if r.augment and is_images(batch):  # image augmentation; rows and series go in as they are
            x = to_float(batch)
            x = random_shift(x, max(1, round(r.shift * x.shape[-1])) if r.shift > 0 else 0, generator)
            if r.flip:
                flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)[:, None, None, None]
                x = torch.where(flip, x.flip(-1), x)
            x = to_input(model.encoder, x)
        else:
            x = batch_input(model.encoder, batch)
        with autocast(labels.device, r.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels[idx], label_smoothing=r.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if steps is not None or ((step + 1) % period and step + 1 < limit):  # the cap's last step is judged too
            continue
        if val is not None:
            acc, vloss = _validate(model, *val, precision=r.precision)
            model.train()
            history.append({"step": step + 1, "val_top1": acc, "val_loss": vloss})
            score = (acc, -vloss)
        else:
            mean = sum(losses[-period:]) / period
            history.append({"step": step + 1, "train_loss": mean})
            score = (0.0, -mean) if best is None or mean < -best[1] * 0.99 else best
        if best is None or score > best:
            best, best_step, stale = score, step + 1, 0
            if val is not None:
                best_state = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        else:
            stale += 1
            if stale >= max(1, r.patience) and step + 1 >= r.min_steps:
                stopped = "patience" if val is not None else "train_loss"
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    held_out = val is not None and best is not None
    return {"steps": step + 1 if limit else 0, "best_step": best_step if held_out else step + 1,
            "val_top1": best[0] if held_out else None, "val_loss": -best[1] if held_out else None,
            "stopped": stopped, "history": history}


__all__ = [
    "ADAPT_RECIPES", "LORA_LR_SCALE", "Classifier", "FinetuneRecipe", "epoch_steps", "lora_recipe", "lr_factor",
    "random_shift", "train_classifier",
]
