"""Plain fine-tuning as a few-label protocol: a copy of the encoder plus a linear head, trained end
to end for a fixed number of steps, scored on the test images.

The same function and recipe train the supervised-from-scratch baseline (a freshly initialised
encoder of the same architecture), so SSL and scratch differ only in their starting weights. The
recipe, the optimiser groups (layer-wise lr decay) and the training loop live in
``selfsup.adapt.finetune`` and are shared with ``selfsup adapt``; they are re-exported here.
No early stopping: a 1-shot budget has no labels to hold out, and one fixed recipe keeps the
budgets comparable.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from selfsup.adapt.finetune import Classifier, FinetuneRecipe, lr_factor, param_groups, random_shift, train_classifier
from selfsup.evaluate.features import as_tensor, module_device


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


__all__ = ["FinetuneRecipe", "finetune", "random_shift", "param_groups", "lr_factor", "Classifier"]
