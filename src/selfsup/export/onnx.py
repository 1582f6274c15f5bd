"""ONNX export of an encoder's pooled features, checked against torch in onnxruntime.

The exported graph maps ``images`` (B, C, H, W), already normalised as the encoder expects
(``data.spec.normalize``), to ``features`` (B, num_features). The batch dimension is dynamic;
height and width are those of the example input (a ViT's position embedding is resized for
that grid at export time).

    export_onnx(encoder, InputSpec(channels=3, image_size=32), "encoder.onnx")
    check_onnx(encoder, "encoder.onnx", torch.randn(7, 3, 32, 32))  # -> max abs difference
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders.inference import eval_mode, module_device
from selfsup.files import atomic_path


def example_input(spec_or_example: InputSpec | torch.Tensor, batch: int = 2) -> torch.Tensor:
    """An example batch: the tensor itself, or random images shaped by an ``InputSpec``."""
    if isinstance(spec_or_example, torch.Tensor):
        return spec_or_example
    s = spec_or_example
    return torch.randn(batch, s.channels, s.image_size, s.image_size)


def export_onnx(
    encoder: nn.Module,
    spec_or_example_input: InputSpec | torch.Tensor,
    path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamo: bool = False,
) -> Path:
    """Write ``encoder``'s ``forward`` (pooled features) to ``path`` as ONNX; returns the path.

    ``dynamo=False`` uses the TorchScript exporter, which emits the requested opset directly and
    takes seconds; the dynamo exporter works too but targets opset 18 and takes longer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example_input(spec_or_example_input).to(module_device(encoder))
    kwargs: dict = {}
    if dynamic_batch and dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=65536)},)
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "features": {0: "batch"}}
    with eval_mode(encoder), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        with atomic_path(path, keep_suffix=True) as tmp:  # never a half-written model at the target
            torch.onnx.export(encoder, (x,), str(tmp), input_names=["images"], output_names=["features"],
                              opset_version=opset, dynamo=dynamo, **kwargs)
    return path


def session(path: str | Path, threads: int | None = None, spin: bool = True):
    """An onnxruntime CPU session with all graph optimisations.

    ``threads`` sets the intra-op threads (default: one per core); ``spin=False`` makes idle threads
    sleep, like torch's OMP_WAIT_POLICY=PASSIVE, which is what a machine shared with others wants.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(sess, x: torch.Tensor) -> torch.Tensor:
    """Features for ``x`` (B, C, H, W) from an onnxruntime session."""
    out = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().float().numpy()})[0]
    return torch.from_numpy(out)


def check_onnx(encoder: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime on ``path`` and ``encoder`` (eval) on ``x``."""
    with eval_mode(encoder):
        ref = encoder(x.to(module_device(encoder))).float().cpu()
    return float((run_onnx(session(path), x) - ref).abs().max())


__all__ = ["export_onnx", "check_onnx", "session", "run_onnx", "example_input"]
