"""Delivering an encoder (``selfsup export``): safetensors, ONNX, Hugging Face or timm folders."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup import runs
from selfsup.api.common import Log, say
from selfsup.hardware import resolve_device

EXPORT_FORMATS = ("safetensors", "onnx", "hf", "timm")


def export(run: str | Path, format: str, out: str | Path | None = None, *, device: str = "auto",
           log: Log = say) -> Path:
    """Deliver a run's encoder: ``safetensors`` (timm names + config metadata), ``onnx`` (pooled
    features, checked against torch in onnxruntime), ``hf`` (a ``transformers.ViTModel`` folder) or
    ``timm`` (timm-named weights + config).

    ``run`` may be a public model (``hf:``, ``timm:``, ``torchvision:``...) with no training run:
    it is exported as selfsup loads it (its normalisation inside, e.g. ONNX takes [0, 1] images the
    same way), by default into ``runs/<model>-<time>/export/``. The encoder is exported from the CPU;
    ``device`` (``hardware.resolve_device``) is where the torch side of the ONNX check runs.
    """
    from selfsup.export.hf import export_hf, export_timm

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if (Path(run) / "dense.json").is_file():  # a detector or segmenter (selfsup adapt --task detect|segment)
        from selfsup.api.dense import export_dense

        return export_dense(run, format, out, log=log)
    encoder, spec, enc_cfg = runs.load_encoder(run)
    if format in ("hf", "timm") and enc_cfg.name != "vit":
        raise ValueError(f"--format {format} exports ViT encoders; this encoder is {enc_cfg.name}")
    default = {"safetensors": "encoder.safetensors", "onnx": "encoder.onnx", "hf": "hf", "timm": "timm"}[format]
    target = Path(out) if out else runs.results_dir(run, log) / "export" / default
    if format == "safetensors" and runs.is_reference(run):
        runs.write_encoder(encoder.state_dict(), enc_cfg, spec, target)
    elif format == "safetensors":
        import shutil

        target.parent.mkdir(parents=True, exist_ok=True)
        path = Path(run)
        shutil.copyfile(path / runs.ENCODER if path.is_dir() else path, target)
    elif format == "onnx":
        from selfsup.export.onnx import check_onnx, export_onnx

        export_onnx(encoder, spec, target)
        x = torch.rand(3, spec.channels, spec.image_size, spec.image_size)
        diff = check_onnx(encoder.to(resolve_device(device)), target, x)  # the torch side on --device
        log(f"onnxruntime matches torch: max abs difference {diff:.2e}")
    elif format == "hf":
        export_hf(encoder, target)
    else:
        export_timm(encoder, target)
    log(f"exported {format} to {target}")
    return target
