"""Continued pretraining: a method that starts from a public model's weights instead of random ones.

``read_warm_start(ref, method)`` reads a model reference once (``encoders.hub``): the vision
encoder's ``EncoderConfig`` (architecture, patch size, mean/std, image size...), its input spec
and weights; for image-text methods both CLIP / SigLIP towers (``load_clip``: text tower with its
tokenizer, projections, logit scale and bias); for MAE the decoder of a ViTMAE checkpoint when it
has one (``load_mae_decoder``). ``warm_start_options(method, ws)`` are the method options those
weights fix (the decoder's shape, the text tower's config...), and ``apply_warm_start(model, ws)``
loads the weights into a method built with them. Per-method knowledge stays in the method's file:
an optional ``warm_start_options(ws)`` (static) and ``warm_start(ws)`` hook; without them only the
encoder is loaded.

The run that results rebuilds from its own files: the encoder's config is the reference's, the
method options are in ``config.yaml``, the weights in the checkpoint and ``encoder.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.convert import MAEDecoder
from selfsup.encoders.hub import CLIPTowers, load_clip, load_mae_decoder, load_pretrained
from selfsup.methods.base import Method

TEXT_METHODS = ("clip", "siglip")  # methods that start from both towers of an image-text model


@dataclass
class WarmStart:
    """What a method starts from: ``ref`` read into selfsup's modules and configs."""

    ref: str
    config: EncoderConfig  # the vision encoder's; alone it rebuilds the network
    spec: InputSpec  # the reference's input: channels, the image size it was trained at
    encoder_state: dict[str, torch.Tensor]
    mae_decoder: MAEDecoder | None = None
    towers: CLIPTowers | None = None

    def describe(self) -> str:
        c = self.config
        shape = (f"ViT width {c.width}, depth {c.depth}, patch {c.patch_size}" if c.name == "vit"
                 else f"{c.name}" + (f" x{c.width_mult:g}" if c.name == "mobilenetv2" else ""))
        extra = "; MAE decoder from the checkpoint" if self.mae_decoder is not None else ""
        extra += "; text tower, projections and logit scale from the checkpoint" if self.towers is not None else ""
        return f"{self.ref} ({shape}, trained at {self.spec.image_size} px){extra}"


def read_warm_start(ref: str | Path, method: str,
                    loaded: tuple[nn.Module, InputSpec, EncoderConfig] | None = None) -> WarmStart:
    """Read ``ref`` for ``method``: both towers for clip / siglip, the decoder too for mae when present.

    ``loaded``: the encoder already loaded from elsewhere (another run's ``encoder.safetensors``,
    which ``selfsup.runs`` reads): only the encoder then starts from it.
    """
    ref = str(ref)
    if loaded is not None:
        encoder, spec, config = loaded
        return WarmStart(ref, config, spec, encoder.state_dict())
    if method in TEXT_METHODS:
        towers = load_clip(ref)
        return WarmStart(ref, towers.vision_config, towers.spec, towers.vision.state_dict(), towers=towers)
    encoder, spec, config = load_pretrained(ref)
    decoder = None
    if method == "mae":
        try:
            decoder = load_mae_decoder(ref)
        except (ValueError, KeyError, FileNotFoundError):
            decoder = None  # no decoder in this checkpoint: MAE starts its decoder from random weights
    return WarmStart(ref, config, spec, encoder.state_dict(), mae_decoder=decoder)


def warm_start_options(method_cls: type[Method], ws: WarmStart) -> dict[str, Any]:
    """Method options fixed by the weights (the method's ``warm_start_options``; none by default)."""
    return dict(method_cls.warm_start_options(ws))


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str, ref: str) -> None:
    """``module.load_state_dict(state)``, with a one-line error naming the options that disagree."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ValueError(f"the {what} of {ref} does not fit this run's {what} ({first}); leave the "
                         f"{what} options to the reference") from None


def apply_warm_start(model: Method, ws: WarmStart) -> Method:
    """Load ``ws``'s weights into ``model`` (built with ``warm_start_options``): the encoder, then the
    method's own ``warm_start(ws)`` hook for the rest (decoders, teachers, text towers)."""
    load_weights(model.encoder, ws.encoder_state, "encoder", ws.ref)
    model.warm_start(ws)
    return model


__all__ = ["TEXT_METHODS", "WarmStart", "apply_warm_start", "load_weights", "read_warm_start", "warm_start_options"]
