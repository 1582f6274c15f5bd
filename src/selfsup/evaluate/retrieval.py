"""Image-text retrieval recall@K with a text-aligned model (the Flickr / COCO protocol of CLIP).

Every image and every caption is embedded; captions are ranked for each image by cosine
similarity and images for each caption. Image -> text R@K is the share of images with at least
one of their own captions among the top K; text -> image R@K the share of captions whose image is
among the top K. Several captions per image are handled by keeping each caption's image index.
Candidates that tie with the right one are ranked in random order and the recall is its
expectation, so ties earn no free credit: a collapsed model (all similarities equal) scores
chance, K / N, where counting ties as hits would give 100 %.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.encoders.inference import eval_mode
from selfsup.evaluate.records import record
from selfsup.evaluate.zeroshot import encode_all


def recall_at_k(
    sim: torch.Tensor, caption_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recalls from similarities ``sim`` (N_images, N_captions) and ``caption_image`` (N_captions,).

    Returns {"R@K_image_to_text": ..., "R@K_text_to_image": ...} as fractions in [0, 1].
    """
    n_img, n_cap = sim.shape
    sim = sim.double()
    out: dict[str, float] = {}
    # image -> text: g captions strictly above the best own one, then a tied block of t others and m own
    own = caption_image[None, :] == torch.arange(n_img)[:, None]  # (N_images, N_captions)
    best_own = sim.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)
    g_i2t = (sim > best_own).sum(dim=1)
    tied = sim == best_own
    t_i2t, m_i2t = (tied & ~own).sum(dim=1), (tied & own).sum(dim=1)
    # text -> image: g images strictly above the caption's own image, t others tied with it
    own_score = sim[caption_image, torch.arange(n_cap)]  # (N_captions,)
    g_t2i = (sim > own_score[None, :]).sum(dim=0)
    t_t2i = (sim == own_score[None, :]).sum(dim=0) - 1
    for k in ks:
        out[f"R@{k}_image_to_text"] = _hit_chance(g_i2t, t_i2t, m_i2t, k).mean().item()
    for k in ks:
        out[f"R@{k}_text_to_image"] = _hit_chance(g_t2i, t_t2i, torch.ones_like(t_t2i), k).mean().item()
    return out


def _hit_chance(g: torch.Tensor, t: torch.Tensor, m: torch.Tensor, k: int) -> torch.Tensor:
    """P(one of m right items is in the top k) when g items rank strictly above them and the m share
    a tie with t wrong ones, the tie broken at random: 1 - C(t, s) / C(t + m, s), s = k - g slots left."""
    s = (k - g).double()
    t, m = t.double(), m.double()
    lg = torch.lgamma
    none_right = torch.exp(lg(t + 1) - lg((t - s).clamp(min=0) + 1) - lg(t + m + 1) + lg((t + m - s).clamp(min=0) + 1))
    p = torch.where(s > t, torch.ones_like(s), 1 - none_right)
    return torch.where(s <= 0, torch.zeros_like(s), p)


def retrieval(
    method: nn.Module,
    images,
    captions_per_image: Sequence[Sequence[str]],
    task: str = "retrieval",
    batch_size: int = 256,
    ks: Sequence[int] = (1, 5, 10),
) -> list[dict]:
    """Recall@K records (protocol "retrieval", encoder "ssl") in both directions.

    ``images`` (N, C, H, W) (uint8 or float; waveforms for an audio model), ``captions_per_image``
    N lists of captions (any number each, at least one).
    """
    if len(images) != len(captions_per_image):
        raise ValueError(f"{len(images)} images but {len(captions_per_image)} caption lists")
    texts = [c for caps in captions_per_image for c in caps]
    caption_image = torch.tensor([i for i, caps in enumerate(captions_per_image) for _ in caps], dtype=torch.long)
    with eval_mode(method):
        img = encode_all(method, images, batch_size)
        txt = torch.cat([method.encode_text(texts[i : i + batch_size]).float().cpu()
                         for i in range(0, len(texts), batch_size)])
    recalls = recall_at_k(img @ txt.T, caption_image, ks)
    extra = {"n_images": len(img), "n_captions": len(txt)}
    return [record(task, "retrieval", "ssl", metric, [value], **extra) for metric, value in recalls.items()]


__all__ = ["retrieval", "recall_at_k"]
