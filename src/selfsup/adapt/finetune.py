"""Classifier training: an encoder plus a linear head, trained on few labels.

The recipe follows MAE's fine-tuning (He et al. 2021, "Masked Autoencoders Are Scalable Vision
Learners", appendix A.1): AdamW, linear warmup then cosine decay, label smoothing, no weight decay
on biases, norms and position embeddings, and layer-wise learning-rate decay (Bao et al. 2021,
BEiT; 0.75 per block in MAE): block i of a depth-L ViT trains at lr * decay ** (L - i), the head
at lr, so the early, most general layers move least. Augmentation is a random shift by up to an
eighth of the side (CIFAR's 4 px of 32), done on the batch in torch; flips are off by default
because they change the meaning of digits and text.

Early stopping (``adapt_classifier``) watches a held-out part of the *labelled* set only
(``data.splits.stratified_split``); the caller's test set never enters this module. ``finetune`` runs the same
loop for a fixed number of steps as the few-label protocol (``evaluate.fewshot``), from the
pretrained weights or, for the from-scratch baseline, from a fresh initialisation of the same
architecture, so the two differ only in their starting weights.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.adapt.lora import add_lora
from selfsup.data.spec import as_tensor, normalize, to_float
from selfsup.data.splits import stratified_split
from selfsup.encoders.inference import encode_images, module_device
from selfsup.train.optim import param_groups
from selfsup.train.schedule import warmup_cosine


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
    eval_every: int = 10  # early stopping: validate every this many steps (only with held-out labels)
    patience: int = 10  # ... and stop after this many validations without improvement (0 = never)


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


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``steps`` (the engine's schedule)."""
    return warmup_cosine(step, steps, warmup)


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

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 images (N, C, H, W) on any device -> class probabilities (N, classes), float32 on the CPU.

        Runs in eval mode; the train/eval mode is restored afterwards.
        """
        return encode_images(self, images, lambda x: self(x).float().softmax(1), batch_size=batch_size,
                             empty=(0, self.head.out_features))


@torch.no_grad()
def _validate(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` on held-out labelled images (M, C, H, W), (M,)."""
    probs = model.predict_proba(images)
    y = labels.cpu()
    return float((probs.argmax(1) == y).double().mean()), float(F.nll_loss(probs.clamp_min(1e-12).log(), y))


def train_classifier(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: FinetuneRecipe,
    *,
    generator: torch.Generator,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Train ``model`` in place on uint8 ``images`` (N, C, H, W) and ``labels`` (N,), both on its device.

    ``generator`` draws the batches and the augmentation (dropout and drop-path use the global
    RNG). With ``val`` (images, labels) -- a held-out part of the labelled set, never the test
    set -- the model is scored every ``recipe.eval_every`` steps, training stops after
    ``recipe.patience`` scores without improvement, and the best weights (higher accuracy, then
    lower loss) are restored. Returns {"steps", "best_step", "val_top1", "val_loss", "history"}.
    """
    r = recipe
    groups = param_groups(model, r.weight_decay, r.layer_decay)
    opt = torch.optim.AdamW(groups, lr=r.lr, betas=(0.9, 0.999))
    warmup = max(1, int(r.warmup_frac * r.steps))
    n = len(images)
    best, best_state, best_step, stale, history = None, None, None, 0, []
    model.train()
    step = 0
    for step in range(r.steps):
        for group in opt.param_groups:
            group["lr"] = r.lr * lr_factor(step, r.steps, warmup) * group["lr_scale"]
        idx = torch.randperm(n, generator=generator)[: r.batch_size].to(images.device)
        x = to_float(images[idx])
        if r.augment:
            x = random_shift(x, max(1, round(r.shift * x.shape[-1])) if r.shift > 0 else 0, generator)
            if r.flip:
                flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)[:, None, None, None]
                x = torch.where(flip, x.flip(-1), x)
        loss = F.cross_entropy(model(normalize(x)), labels[idx], label_smoothing=r.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if val is None or ((step + 1) % max(1, r.eval_every) and step + 1 < r.steps):
            continue
        acc, vloss = _validate(model, *val)
        model.train()
        history.append({"step": step + 1, "val_top1": acc, "val_loss": vloss})
        if best is None or (acc, -vloss) > best:
            best, best_step, stale = (acc, -vloss), step + 1, 0
            best_state = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        else:
            stale += 1
            if r.patience and stale >= r.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return {"steps": step + 1 if r.steps else 0, "best_step": best_step,
            "val_top1": best[0] if best else None, "val_loss": -best[1] if best else None, "history": history}


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
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = Classifier(copy.deepcopy(encoder), num_classes).to(device)
        if not any(p.requires_grad for p in model.encoder.parameters()):
            warnings.warn("the encoder has no trainable parameters (frozen?): only the head is trained", stacklevel=2)
        train_classifier(model, x_train, y_train, r, generator=g)
        return model.predict_proba(x_test, eval_batch_size)


def adapt_classifier(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    method: str = "finetune",
    recipe: FinetuneRecipe | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    device: str | torch.device | None = None,
) -> tuple[Classifier, dict]:
    """Train a classifier on a deep copy of ``encoder`` (left untouched) from labelled images only.

    images uint8 (N, C, H, W), labels (N,) in [0, num_classes). ``method`` "finetune" trains
    everything with layer-wise lr decay; "lora" freezes the encoder, adds rank-``lora_rank``
    adapters to the attention projections (``adapt.lora``) and trains them with the head. A
    stratified ``val_fraction`` of these labels is held out for early stopping. ``seed`` fixes the
    split, the head, the adapters and the batches; the global RNG state is restored afterwards.
    Returns (trained Classifier in eval mode, info: recipe, split sizes, validation scores).
    """
    if method not in ADAPT_RECIPES:
        raise ValueError(f"unknown adaptation method {method!r}; choose from {', '.join(ADAPT_RECIPES)}")
    r = recipe or ADAPT_RECIPES[method]
    if method == "lora" and r.layer_decay != 1.0:
        r = replace(r, layer_decay=1.0)
    device = torch.device(device) if device is not None else module_device(encoder)
    x = as_tensor(images)
    y = torch.as_tensor(np.asarray(labels)).long()
    if len(y) == 0 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"adaptation needs labels in [0, {num_classes}); got {len(y)} labels")
    train_idx, val_idx = stratified_split(y.numpy(), val_fraction, seed)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    if len(val_idx) == 0:
        warnings.warn("no class has 2 labels to spare: training without held-out labels (no early stopping)",
                      stacklevel=2)
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        body = copy.deepcopy(encoder)
        if method == "lora":
            body = add_lora(body, rank=lora_rank, alpha=lora_alpha)
        model = Classifier(body, num_classes).to(device)
        val = (x[val_idx].to(device), y[val_idx].to(device)) if len(val_idx) else None
        fit = train_classifier(model, x[train_idx].to(device), y[train_idx].to(device), r, generator=g, val=val)
    info = {
        "method": method, "recipe": asdict(r), "seed": seed,
        "n_train": len(train_idx), "n_val": len(val_idx), "val_fraction": val_fraction, **fit,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if method == "lora":
        info["lora"] = {"rank": lora_rank, "alpha": lora_alpha}
    return model, info


__all__ = [
    "ADAPT_RECIPES", "LORA_LR_SCALE", "Classifier", "FinetuneRecipe", "adapt_classifier", "finetune",
    "lora_recipe", "lr_factor", "param_groups", "random_shift", "train_classifier",
]
