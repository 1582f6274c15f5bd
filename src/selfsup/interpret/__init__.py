"""Interpretability and the run report: what the encoder learned, in pictures.

``build_report(run_dir, ...)`` writes a self-contained ``report.html``; the pieces it is made of
(attention maps and rollout, PCA / t-SNE maps, nearest neighbours, figures) are usable alone.
"""

from selfsup.interpret.attention import attention_rollout, cls_attention, rollout_maps, vit_attention
from selfsup.interpret.embedding import nearest_neighbours, pca, tsne
from selfsup.interpret.report import build_report

__all__ = [
    "build_report",
    "attention_rollout",
    "cls_attention",
    "rollout_maps",
    "vit_attention",
    "pca",
    "tsne",
    "nearest_neighbours",
]
