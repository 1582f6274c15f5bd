"""The run folder: its file names, a fresh folder, and the encoder and method saved in it.

A run is a folder that holds everything needed to reproduce and reuse it (docs/architecture.md,
"Runs"). This module is the one place that knows the folder's layout; the engine, evaluation and
the report are handed paths made from these names. It sits beside ``selfsup.config`` above the
engine (layers 1-4) and below the consumers of a trained encoder (layer 5).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from selfsup import distributed
from selfsup.config import ConfigError, RunConfig, load_config
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.methods import build_method

CONFIG = "config.yaml"  # the resolved RunConfig
ENCODER = "encoder.safetensors"  # encoder weights (timm names); encoder config + input spec in the metadata
METHOD = "method.safetensors"  # the whole method: decoders, heads, text tower, tokenizer buffer
METRICS = "metrics.json"  # the records (evaluate.records)
LOSS_HISTORY = "loss_history.json"  # [[step, loss], ...]
CHECKPOINTS = "checkpoints"  # last.ckpt, previous.ckpt
LOGS = "logs"  # tensorboard/, csv/
REPORT = "report.html"
FIGURES = "figures"
CACHE = "cache"  # features keyed by weights and data
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


def save_encoder(method: nn.Module, cfg: RunConfig, spec: InputSpec, run_dir: Path) -> Path:
    """``encoder.safetensors`` (timm-named weights + config in the metadata) and ``method.safetensors``."""
    meta = {
        "encoder_config": cfg.encoder.model_dump_json(),
        "input_spec": json.dumps(asdict(spec)),
        "method": cfg.method_name,
        "format": "selfsup/timm",
    }
    enc = {k: v.detach().contiguous().cpu() for k, v in method.encoder.state_dict().items()}
    save_file(enc, str(run_dir / ENCODER), metadata=meta)
    full = {k: v.detach().contiguous().cpu().clone() for k, v in method.state_dict().items()}
    save_file(full, str(run_dir / METHOD), metadata=meta)
    return run_dir / ENCODER


def _read_meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


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


def load_encoder(run_or_file: str | Path) -> tuple[nn.Module, InputSpec, EncoderConfig]:
    """The pretrained encoder of a run folder (or an ``encoder.safetensors`` file), in eval mode.

    A run folder's ``config.yaml`` is checked first (``load_run_config``), so a folder someone sent
    with a hostile config is refused by every command that opens it, not only by those that read it.
    """
    path = Path(run_or_file)
    if path.is_dir() and (path / CONFIG).is_file():
        load_run_config(path)
    path = path / ENCODER if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no encoder weights at {path}; did the pretraining finish?")
    meta = _read_meta(path)
    enc_cfg = EncoderConfig.model_validate_json(meta["encoder_config"])
    spec = InputSpec(**json.loads(meta["input_spec"]))
    encoder = build_encoder(enc_cfg, spec)
    encoder.load_state_dict(load_file(str(path)))
    return encoder.eval(), spec, enc_cfg


def load_method(run: str | Path) -> nn.Module:
    """The whole trained method of a run (encoder plus heads, decoders, text towers), in eval mode."""
    run = Path(run)
    path = run / METHOD
    meta = _read_meta(path)
    cfg = load_run_config(run)
    spec = InputSpec(**json.loads(meta["input_spec"]))
    method = build_method(cfg.method_name, cfg.method_options, cfg.encoder, spec)
    method.load_state_dict(load_file(str(path)))
    return method.eval()


__all__ = [
    "CACHE", "CHECKPOINTS", "CONFIG", "ENCODER", "FIGURES", "LOGS", "LOSS_HISTORY", "METHOD", "METRICS", "REPORT",
    "ROOT", "load_encoder", "load_method", "load_run_config", "new_run_dir", "save_encoder", "timestamped",
]
