"""Zero-shot classification with a text-aligned model (CLIP, SigLIP; Radford et al. 2021, section 3.1).

No training at all: each class name is written into prompt templates ("a photo of a {}."), the
text tower embeds the prompts, the normalised mean over templates is the class's weight, and an
input is assigned the class of highest cosine similarity. Works for images and audio alike
through the model's ``encode_text`` and ``encode_image`` / ``encode_audio``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.spec import as_tensor
from selfsup.encoders.inference import eval_mode, module_device
from selfsup.evaluate.records import record

# A few of CLIP's ImageNet prompts (the paper's ensemble has 80; these carry most of the gain).
IMAGE_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "itap of a {}.",
)
# Spoken words are the class names themselves ("seven").
AUDIO_TEMPLATES = ("{}",)


def _is_audio(method: nn.Module) -> bool:
    return bool(getattr(method, "audio", False))


@torch.no_grad()
def class_embeddings(method: nn.Module, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, E): per class the L2-normalised mean of its normalised prompt embeddings."""
    out = []
    for name in class_names:
        emb = method.encode_text([t.format(name) for t in templates])
        out.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(out)


@torch.no_grad()
def encode_all(method: nn.Module, inputs, batch_size: int = 256) -> torch.Tensor:
    """Images (N, C, H, W) (uint8 or float) or waveforms ((N, T) or a list) -> normalised (N, E) on the CPU."""
    encode = method.encode_audio if _is_audio(method) else method.encode_image
    device = module_device(method)
    out = []
    for i in range(0, len(inputs), batch_size):
        chunk = inputs[i : i + batch_size]
        if isinstance(chunk, np.ndarray | torch.Tensor):
            chunk = as_tensor(chunk).to(device)
        else:
            chunk = [torch.as_tensor(w).to(device) for w in chunk]
        out.append(encode(chunk).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def zero_shot_predict(
    method: nn.Module, inputs, class_names: Sequence[str], templates: Sequence[str] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Cosine similarities (N, C) between inputs and class prompts. Eval mode, restored afterwards."""
    if templates is None:
        templates = AUDIO_TEMPLATES if _is_audio(method) else IMAGE_TEMPLATES
    with eval_mode(method):
        classes = class_embeddings(method, class_names, templates).float().cpu()
        return encode_all(method, inputs, batch_size) @ classes.T


def zero_shot(
    method: nn.Module,
    inputs,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    task: str = "zero-shot",
    batch_size: int = 256,
) -> list[dict]:
    """Zero-shot accuracy records: "top1" (and "top5" with more than 5 classes), as fractions.

    ``inputs``: images (N, C, H, W) or waveforms; ``labels`` (N,) indices into ``class_names``;
    ``templates`` default to a CLIP-style set for images and plain "{}" for audio.
    """
    scores = zero_shot_predict(method, inputs, class_names, templates, batch_size)
    y = torch.as_tensor(np.asarray(labels)).long()
    n_templates = len(templates) if templates is not None else None
    extra = {"n_classes": len(class_names), "n_samples": len(y)}
    if n_templates is not None:
        extra["n_templates"] = n_templates
    top1 = (scores.argmax(dim=1) == y).float().mean().item()
    recs = [record(task, "zero-shot", "ssl", "top1", [top1], **extra)]
    if len(class_names) > 5:
        top5 = (scores.topk(5, dim=1).indices == y[:, None]).any(dim=1).float().mean().item()
        recs.append(record(task, "zero-shot", "ssl", "top5", [top5], **extra))
    return recs


__all__ = ["zero_shot", "zero_shot_predict", "class_embeddings", "encode_all", "IMAGE_TEMPLATES", "AUDIO_TEMPLATES"]
