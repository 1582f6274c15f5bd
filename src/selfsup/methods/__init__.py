"""Self-supervised objectives, one file each, found by name.

A method is an ``nn.Module`` built as ``Method(cfg, encoder_cfg, spec)`` where ``cfg`` is an
instance of its ``Config`` (a pydantic model of its options), ``encoder_cfg`` an
``EncoderConfig`` and ``spec`` the ``InputSpec`` of the data. It owns ``self.encoder`` (the
network that is kept, exported and evaluated), and ``forward(batch)`` returns a dict with a
scalar ``loss`` (other scalar entries are logged). Optional hooks the engine calls when present:
``prepare(source, run_dir)`` once before training (e.g. to fit a tokenizer),
``on_train_batch_end(step, total_steps)`` after each optimizer step (e.g. EMA teachers) and
``on_train_end()``. Continuing from public weights (``methods.warmstart``): an optional static
``warm_start_options(ws)`` (options the weights fix) and ``warm_start(ws)`` (weights beyond the
encoder). A method with ``uses_teacher`` gets its frozen teacher from the API (``set_teacher``).

Adding a method = one file + one line in ``METHODS``.
"""

from __future__ import annotations

from pydantic import BaseModel
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.methods.clip import CLIP, SigLIP
from selfsup.methods.dino import DINO
from selfsup.methods.distill import Distill
from selfsup.methods.mae import MAE
from selfsup.methods.simclr import SimCLR

METHODS: dict[str, type[nn.Module]] = {
    "mae": MAE,
    "simclr": SimCLR,
    "dino": DINO,
    "clip": CLIP,
    "siglip": SigLIP,
    "distill": Distill,
}


def method_class(name: str) -> type[nn.Module]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(name: str, options: dict | None = None) -> BaseModel:
    """Validate ``options`` against the method's ``Config``."""
    return method_class(name).Config(**(options or {}))


def build_method(name: str, options: dict | BaseModel | None, encoder: EncoderConfig, spec: InputSpec) -> nn.Module:
    cfg = options if isinstance(options, BaseModel) else method_config(name, options)
    return method_class(name)(cfg, encoder, spec)


__all__ = ["METHODS", "build_method", "method_class", "method_config"]
