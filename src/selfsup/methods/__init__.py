"""Self-supervised objectives, one file each, found by name.

A method subclasses ``methods.base.Method`` and is built as ``Method(cfg, encoder_cfg, spec)`` where ``cfg`` is an
instance of its ``Config`` (a pydantic model of its options), ``encoder_cfg`` an
``EncoderConfig`` and ``spec`` the ``InputSpec`` of the data. It owns ``self.encoder`` (the
network that is kept, exported and evaluated), and ``forward(batch)`` returns a dict with a
scalar ``loss`` (other scalar entries are logged). Hooks (``Method``'s, no-ops unless overridden;
a misspelt one is refused when the class is defined):
``prepare(source, run_dir)`` once before training (e.g. to fit a tokenizer),
``on_train_batch_end(step, total_steps)`` after each optimizer step (e.g. EMA teachers) and
``on_train_end()``. Continuing from public weights (``methods.warmstart``): a static
``warm_start_options(ws)`` (options the weights fix) and ``warm_start(ws)`` (weights beyond the
encoder). A method with ``uses_teacher`` gets its frozen teacher from the API (``set_teacher``).

Adding a method = one file + one line in ``METHODS``.

A name can mean one objective on several modalities: ``VARIANTS[name][modality]`` is the class that
``build_method`` uses for that data (none now: ``mae`` is one class for image patches, table columns
and series patches, through the tokenizer; ``simclr`` and ``dino`` take each data type's views from
``selfsup.modalities``); the variants share the name's ``Config``. A class that trains on tables or
series says so in ``modalities``; the others (image and audio methods) are refused such data with
the names that fit it.
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
from selfsup.methods.scarf import SCARF
from selfsup.methods.simclr import SimCLR
from selfsup.methods.ts2vec import TS2Vec

METHODS: dict[str, type[nn.Module]] = {
    "mae": MAE,
    "simclr": SimCLR,
    "dino": DINO,
    "clip": CLIP,
    "siglip": SigLIP,
    "distill": Distill,
    "scarf": SCARF,
    "ts2vec": TS2Vec,
}

VARIANTS: dict[str, dict[str, type[nn.Module]]] = {}


def method_class(name: str, modality: str | None = None) -> type[nn.Module]:
    """The class of method ``name`` (for data of ``modality``, when the name has variants)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return VARIANTS.get(name, {}).get(modality or "", METHODS[name])


STRUCTURED = ("table", "series")  # modalities only classes that list them in ``modalities`` train on


def methods_for(modality: str) -> list[str]:
    """The method names that train on ``modality``."""
    if modality not in STRUCTURED:
        return sorted(n for n, c in METHODS.items() if not getattr(c, "modalities", None) or modality in c.modalities)
    return sorted(n for n in METHODS if modality in getattr(method_class(n, modality), "modalities", ()))


def method_config(name: str, options: dict | None = None) -> BaseModel:
    """Validate ``options`` against the method's ``Config``."""
    return method_class(name).Config(**(options or {}))


def build_method(name: str, options: dict | BaseModel | None, encoder: EncoderConfig, spec: InputSpec) -> nn.Module:
    cfg = options if isinstance(options, BaseModel) else method_config(name, options)
    cls = method_class(name, spec.modality)
    if spec.modality in STRUCTURED and spec.modality not in getattr(cls, "modalities", ()):
        raise ValueError(f"method {name!r} does not train on {spec.modality} data; "
                         f"choose from {', '.join(methods_for(spec.modality))}")
    return cls(cfg, encoder, spec)


__all__ = ["METHODS", "STRUCTURED", "VARIANTS", "build_method", "method_class", "method_config", "methods_for"]
