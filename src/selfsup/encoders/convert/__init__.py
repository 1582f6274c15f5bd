"""Public checkpoints -> selfsup's encoders: parameter names and the configuration that rebuilds them.

Every function here is pure: a state dict (and the source's own configuration, as parsed JSON)
in, a ``Converted`` out: the vision encoder's ``EncoderConfig`` and state dict in timm names (our
ViT's, ResNet's and MobileNetV2's names), the ``InputSpec`` and normalisation it was trained with,
and for image-text models the text tower (``TextConfig`` + state dict), the image projection and
the logit scale / bias. ``encoders.hub`` finds the files, reads them and builds the modules.

Origins:
- Hugging Face ``transformers`` (``from_hf``): ViT, ViTMAE (+ its decoder in ``methods/mae.py``
  names), DINOv2, DINOv2 with registers, CLIP, SigLIP. The names are those of the Hub's files
  (``encoder.layer.0.attention.attention.query``); transformers-5 in-memory names
  (``layers.0.attention.q_proj``) are accepted too.
- timm (``from_timm``): our names already; the architecture (heads, activation, LayerNorm eps)
  comes from the weights' shapes plus the timm model name, e.g. ``vit_small_patch14_reg4_dinov2``.
  facebookresearch checkpoints in timm-like names (DINO, DINOv2 with ``register_tokens`` / ``w12``,
  MAE with its decoder) load through the same path.
- open_clip (``from_open_clip``): native ViT CLIP models (``visual.conv1``, ``transformer.resblocks``)
  and models whose vision tower is a timm model (``visual.trunk.*``: SigLIP in open_clip).
- torchvision (``from_torchvision``): ResNet-18/34/50 and MobileNetV2 at any width, with the
  conventions of Keras-trained weights when ``origin="keras"``.

One module per origin (``hf``, ``timm``, ``open_clip``, ``torchvision``) over ``common`` (the
result types, normalisation constants, shape helpers).
"""

from selfsup.encoders.convert.common import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Converted,
    MAEDecoder,
    default_heads,
    hf_preprocess,
)
from selfsup.encoders.convert.hf import HF_MODEL_TYPES, from_hf
from selfsup.encoders.convert.open_clip import from_open_clip
from selfsup.encoders.convert.timm import from_timm, timm_act
from selfsup.encoders.convert.torchvision import from_torchvision

__all__ = [
    "Converted", "MAEDecoder", "from_hf", "from_timm", "from_open_clip", "from_torchvision", "timm_act",
    "default_heads", "hf_preprocess", "HALF", "IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
    "HF_MODEL_TYPES",
]
