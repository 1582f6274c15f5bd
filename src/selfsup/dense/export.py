"""ONNX export of a whole detector or segmenter, checked against torch in onnxruntime.

The graph takes ``images``: float (B, C, S, S) in [0, 1] (RGB or grey as the model was trained, resized to
its square side S; the encoder's normalisation is inside). Outputs:

- detection: ``boxes`` (B, k, 4) [x1, y1, x2, y2] in the S x S input's pixels, ``scores`` (B, k) and
  ``classes`` (B, k): CenterNet's top-k heat-map peaks (3x3 max-pool, ``dense.boxes.peaks``). Left to the
  user, as ``selfsup predict`` does: drop scores under a threshold (0.05), per-class NMS at IoU 0.6
  (``dense.boxes.nms``), and scale boxes by (W / S, H / S) to the original image.
- segmentation: ``logits`` (B, K, S, S); the class map is their argmax, resized (nearest) to the image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from selfsup.dense.boxes import peaks
from selfsup.dense.heads import CenterNet
from selfsup.files import atomic_path


class Exported(nn.Module):
    """The model plus its tensor-only post-processing (see the module docstring)."""

    def __init__(self, model: nn.Module, k: int = 100):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, images: torch.Tensor):
        if isinstance(self.model, CenterNet):
            return peaks(*self.model(images), self.model.stride, self.k)
        return self.model(images)


def export_dense_onnx(model: nn.Module, channels: int, size: int, path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` with its post-processing to ``path``; the batch dimension is dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = Exported(model.eval()).eval()
    names = ["boxes", "scores", "classes"] if isinstance(model, CenterNet) else ["logits"]
    x = torch.rand(2, channels, size, size)
    with warnings.catch_warnings(), atomic_path(path, keep_suffix=True) as tmp:  # never half a model at path
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (x,), str(tmp), input_names=["images"], output_names=names,
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    return path


def check_dense_onnx(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between onnxruntime and torch on ``x``: logits, or detections' scores and the boxes
    of real peaks (score > 1e-3), whose classes must agree exactly (else inf)."""
    from selfsup.export.onnx import session

    sess = session(path)
    got = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = Exported(model.eval())(x)
    if not isinstance(ref, tuple):
        return float((ref - torch.from_numpy(got[0])).abs().max())
    boxes, scores, classes = ref
    g_boxes, g_scores, g_classes = (torch.from_numpy(a) for a in got)
    diff = float((scores - g_scores).abs().max())
    real = scores > 1e-3  # the peaks; below them the order of tied zeros is arbitrary in either runtime
    if not torch.equal(classes[real].long(), g_classes[real].long()):
        return float("inf")
    return max(diff, float((boxes[real] - g_boxes[real]).abs().max()) if real.any() else 0.0)


__all__ = ["Exported", "check_dense_onnx", "export_dense_onnx"]
