"""The run folder: its file names, a fresh folder, and the encoder and method saved in it.

A run is a folder that holds everything needed to reproduce and reuse it (docs/architecture.md,
"Runs"). This module is the one place that knows the folder's layout; the engine, evaluation and
the report are handed paths made from these names. Wherever a run is the source of an encoder, a
public model reference works too (``load_encoder``, ``load_method``, ``results_dir``). It sits
beside ``selfsup.config`` above the engine (layers 1-4) and below the consumers of a trained
encoder (layer 5).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from selfsup import distributed, files
from selfsup.config import ConfigError, RunConfig, load_config
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.bounds import check_encoder
from selfsup.encoders.hub import ModelRef, parse_ref
from selfsup.hardware import resolve_device
from selfsup.methods import build_method

CONFIG = "config.yaml"  # the resolved RunConfig
ENCODER = "encoder.safetensors"  # encoder weights (timm names); encoder config + input spec in the metadata
ENCODER_LAST = "encoder-last.safetensors"  # with a --monitor: the last weights (ENCODER holds the best)
METHOD = "method.safetensors"  # the whole method: decoders, heads, text tower, tokenizer buffer
METRICS = "metrics.json"  # the records (evaluate.records)
LOSS_HISTORY = "loss_history.json"  # [[step, loss], ...]
CHECKPOINTS = "checkpoints"  # last.ckpt, previous.ckpt
LOGS = "logs"  # tensorboard/, csv/
REPORT = "report.html"
FIGURES = "figures"
CACHE = "cache"  # features keyed by weights and data
SNAPSHOTS = "snapshots"  # <time>/encoder.safetensors + method.safetensors, kept at train.snapshots
REFERENCE = "reference.json"  # in a results folder of a public model (no run): which model
ROOT = Path("runs")  # where a run goes when no folder is named


def timestamped(prefix: str) -> Path:
    """``runs/<prefix>-<YYYYmmdd-HHMMSS>``: the default folder of a new run."""
    return ROOT / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(method: str, out: str | Path | None) -> Path:
    """A fresh run folder; an existing run is never overwritten."""
    run = Path(out) if out else timestamped(method)
    if (run / CONFIG).exists() and distributed.is_global_zero():  # other ranks follow rank 0's folder
        raise ConfigError(f"{run} already holds a run; continue it with --out {run} --resume, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run


def encoder_metadata(encoder_cfg: EncoderConfig, spec: InputSpec, method: str | None = None) -> dict[str, str]:
    """What ``encoder.safetensors`` carries besides the weights: enough to rebuild the encoder."""
    meta = {"encoder_config": encoder_cfg.model_dump_json(), "input_spec": json.dumps(asdict(spec)),
            "format": "selfsup/timm"}
    return meta | ({"method": method} if method else {})


def write_encoder(state: dict[str, torch.Tensor], encoder_cfg: EncoderConfig, spec: InputSpec, path: Path,
                  method: str | None = None) -> Path:
    """Encoder weights (timm names) with their config in the metadata, as ``load_encoder`` reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp),
                  metadata=encoder_metadata(encoder_cfg, spec, method))
    return path


def save_encoder(method: nn.Module, cfg: RunConfig, spec: InputSpec, run_dir: Path,
                 best: dict[str, torch.Tensor] | None = None) -> Path:
    """``encoder.safetensors`` (timm-named weights + config in the metadata) and ``method.safetensors``.

    With ``best`` (the regression guard's best weights, ``train.monitor``) those go to
    ``encoder.safetensors`` and the last weights to ``encoder-last.safetensors``; ``method.safetensors``
    always holds the last state of the whole method.
    """
    last = method.encoder.state_dict()
    if best is not None:
        write_encoder(last, cfg.encoder, spec, run_dir / ENCODER_LAST, cfg.method_name)
    write_encoder(best if best is not None else last, cfg.encoder, spec, run_dir / ENCODER, cfg.method_name)
    full = {k: v.detach().contiguous().cpu().clone() for k, v in method.state_dict().items()}
    with files.atomic_path(run_dir / METHOD) as tmp:
        save_file(full, str(tmp), metadata=encoder_metadata(cfg.encoder, spec, cfg.method_name))
    return run_dir / ENCODER


def _read_meta(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors' own error kinds for a damaged header
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable safetensors file ({first})") from None


def load_run_config(run: str | Path) -> RunConfig:
    """The run's ``config.yaml``, validated like a new config (a hostile ``data.path`` is refused);
    errors name the file."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise ConfigError(f"not a run folder (no {CONFIG}): {run}")
    try:
        return load_config(path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------------------- runs or references


def _encoder_file(source: str | Path) -> Path | None:
    """The selfsup encoder file of a run folder or an ``encoder.safetensors``-style file; None otherwise."""
    path = Path(source)
    if path.is_dir():
        if (path / ENCODER).is_file():
            return path / ENCODER
        if (path / CONFIG).is_file():
            raise FileNotFoundError(f"no encoder weights at {path / ENCODER}; did the pretraining finish?")
        return None
    if path.is_file() and path.suffix == ".safetensors" and "encoder_config" in _read_meta(path):
        return path
    return None


def is_reference(source: str | Path) -> bool:
    """True for a public model reference (``hf:``, ``timm:``, ``open_clip:``, ``torchvision:`` or a local file
    or folder of those, ``encoders.hub``); False for a run folder or a selfsup encoder file."""
    return _encoder_file(source) is None


def canonical(source: str | Path) -> str:
    """``source`` as it can be found again from any working directory: absolute paths, the reference's scheme
    and options kept."""
    if not is_reference(source):
        return str(Path(source).resolve())
    ref = parse_ref(source)
    name = str(Path(ref.name).expanduser().resolve()) if Path(ref.name).expanduser().exists() else ref.name
    return str(ModelRef(ref.scheme, name, ref.options))


def source_name(source: str | Path) -> str:
    """A short name for folder names and logs: the run's folder, or the model's (``dinov2-small``)."""
    if not is_reference(source):
        path = Path(source).resolve()
        return path.name if path.is_dir() else path.parent.name
    name = parse_ref(source).name.rstrip("/")
    name = Path(name).stem if Path(name).suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") else Path(name).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def results_dir(source: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """Where results about ``source`` are written: the run folder itself (the folder of an encoder file),
    or, for a public model, a fresh ``runs/<model>-<time>/`` holding ``reference.json`` (what was measured)."""
    if not is_reference(source):
        path = Path(source)
        return path if path.is_dir() else path.parent
    out = timestamped(source_name(source))
    if distributed.is_global_zero():
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / REFERENCE, {"reference": canonical(source)})
    if log is not None:
        log(f"{source} is a public model, not a run: results go to {out}")
    return out


def owning_run(folder: str | Path, named: str | Path | None) -> Path:
    """Where results about a result folder (an anomaly bank's) are written: the run its JSON names
    only when ``folder`` lies inside that run (its default place, ``RUN/anomaly/``), otherwise
    ``folder`` itself. A JSON handed in with a folder can never send writes anywhere else."""
    folder = Path(folder).resolve()
    if named is None or is_reference(named) or not Path(named).is_dir():
        return folder
    run = Path(named).resolve()
    return run if folder.is_relative_to(run) else folder


class LoadedEncoder(NamedTuple):
    """What ``load_encoder`` returns: unpacks as ``encoder, spec, config`` and names them too
    (``loaded.spec.image_size``)."""

    encoder: nn.Module
    spec: InputSpec
    config: EncoderConfig


def load_encoder(source: str | Path, device: str | torch.device | None = None,
                 **options) -> LoadedEncoder:
    """An encoder in eval mode with its input spec and config, from a run folder, an ``encoder.safetensors``
    file, or a public model reference (``encoders.hub.load_pretrained``: ``hf:ORG/NAME``,
    ``timm:NAME.TAG``, ``open_clip:ARCH/TAG``, ``torchvision:FILE``, a local folder or file of those;
    ``options`` go to the loader). It is on ``device`` (``hardware.resolve_device``: "auto" = the
    accelerator when present; None = the CPU), so everything that runs it runs there."""
    encoder, spec, config = _load_encoder(source, **options)
    return LoadedEncoder(encoder.to(resolve_device(device or "cpu")), spec, config)


def _load_encoder(source: str | Path, **options) -> tuple[nn.Module, InputSpec, EncoderConfig]:
    if Path(source).is_dir() and (Path(source) / CONFIG).is_file():
        load_run_config(source)  # a hostile config.yaml is refused by every command that opens the run
    path = _encoder_file(source)
    if path is None:
        from selfsup.encoders.hub import load_pretrained

        encoder, spec, config = load_pretrained(source, **options)
        return encoder.eval(), spec, config
    meta = _read_meta(path)
    enc_cfg, spec = _stored_config(path, meta)
    encoder = build_encoder(enc_cfg, spec)
    encoder.load_state_dict(load_file(str(path)))
    return encoder.eval(), spec, enc_cfg


def _stored_config(path: Path, meta: dict) -> tuple[EncoderConfig, InputSpec]:
    """The encoder config and input spec of a weights file's metadata, refused in one line when they
    do not parse or hold sizes out of bounds (``encoders.bounds``)."""
    try:
        enc_cfg = EncoderConfig.model_validate_json(meta.get("encoder_config", ""))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "encoder_config"
        raise ValueError(f"{path}: metadata encoder_config: {where}: {err.get('msg', 'invalid')}") from None
    spec = InputSpec.from_json(meta.get("input_spec", "{}"), f"{path}: ")
    check_encoder(enc_cfg, spec, f"{path}: ")
    return enc_cfg, spec


def load_method(source: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """The whole trained method of a run (encoder plus heads, decoders, text towers), in eval mode, on
    ``device`` (``hardware.resolve_device``; None = the CPU).

    A public CLIP / SigLIP reference gives the ``clip`` / ``siglip`` method holding both of its towers and
    its tokenizer (``methods.warmstart``), ready for zero-shot and retrieval.
    """
    run = Path(source)
    if is_reference(source):
        from selfsup.methods import method_class
        from selfsup.methods.warmstart import apply_warm_start, read_warm_start, warm_start_options

        ws = read_warm_start(source, "clip")
        name = "siglip" if ws.towers.logit_bias is not None else "clip"
        method = build_method(name, warm_start_options(method_class(name), ws), ws.config, ws.spec)
        return apply_warm_start(method, ws).eval().to(resolve_device(device or "cpu"))
    path = run / METHOD
    meta = _read_meta(path)
    cfg = load_run_config(run)
    spec = InputSpec.from_json(meta.get("input_spec", "{}"), f"{path}: ")
    method = build_method(cfg.method_name, cfg.method_options, cfg.encoder, spec)
    method.load_state_dict(load_file(str(path)))
    return method.eval().to(resolve_device(device or "cpu"))


__all__ = [
    "CACHE", "CHECKPOINTS", "CONFIG", "ENCODER", "ENCODER_LAST", "FIGURES", "LOGS", "LOSS_HISTORY", "METHOD",
    "LoadedEncoder", "METRICS", "REFERENCE", "REPORT", "ROOT", "SNAPSHOTS", "canonical", "encoder_metadata",
    "is_reference", "load_encoder", "load_method", "load_run_config", "new_run_dir", "owning_run", "results_dir",
    "save_encoder", "source_name", "timestamped", "write_encoder",
]
