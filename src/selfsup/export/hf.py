"""Hugging Face and timm interop for the ViT: rename parameters, write the config, both ways.

selfsup's ViT already uses timm's names, so a timm export is the state dict itself plus a
``config.json`` in timm's ``pretrained_cfg`` style. Hugging Face ``ViTModel`` splits the fused
qkv projection into query/key/value and names every piece differently; ``to_hf`` and ``from_hf``
translate, and ``hf_config`` writes the matching ``ViTConfig`` fields (``layer_norm_eps`` 1e-6,
exact GELU) so ``ViTModel.from_pretrained(folder, add_pooling_layer=False)`` computes the same
function: its ``last_hidden_state`` equals our ``forward_features``; ``preprocessor_config.json``
carries the input scale. The timm folder names a real timm architecture with ``model_args`` that
rebuild the encoder exactly (``timm_args``: our average pooling is timm's ``fc_norm=False``) and
loads with ``timm.create_model("local-dir:FOLDER", pretrained=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from selfsup.data.spec import IMAGE_MEAN, IMAGE_STD
from selfsup.encoders import input_stats
from selfsup.encoders.convert.hf import HF_VIT_BLOCK, hf_vit_state
from selfsup.encoders.layers import GluMlp, LayerScale, Mlp, QuickGELU
from selfsup.encoders.vit import VisionTransformer
from selfsup.files import atomic_path, write_json


def to_hf(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """timm/selfsup ViT state dict -> Hugging Face ``ViTModel`` names (``prefix`` e.g. "vit.")."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.startswith("head."):
            continue
        if name == "cls_token":
            out["embeddings.cls_token"] = t
        elif name == "pos_embed":
            out["embeddings.position_embeddings"] = t
        elif name.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + name.rsplit(".", 1)[1]] = t
        elif name.startswith("norm."):
            out["layernorm." + name.rsplit(".", 1)[1]] = t
        elif name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            layer = f"encoder.layer.{i}."
            module, kind = rest.rsplit(".", 1)
            if module == "attn.qkv":
                for part, chunk in zip(("query", "key", "value"), t.chunk(3, dim=0), strict=True):
                    out[f"{layer}attention.attention.{part}.{kind}"] = chunk.contiguous()
            else:
                out[f"{layer}{HF_VIT_BLOCK[module]}.{kind}"] = t
        else:
            raise KeyError(f"no Hugging Face name for parameter {name!r}")
    return {prefix + k: v for k, v in out.items()}


def from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` (or ``ViTForImageClassification`` with "vit.") -> timm names
    (``encoders.convert.hf.hf_vit_state``: Hub file names and transformers-5 in-memory names)."""
    keep = {k: v for k, v in state.items() if not k.removeprefix("vit.").startswith(("pooler.", "classifier."))}
    return hf_vit_state(keep)


def hf_config(model: VisionTransformer) -> dict:
    """``ViTConfig`` fields for ``model``."""
    return {
        "model_type": "vit", "architectures": ["ViTModel"],
        "hidden_size": model.embed_dim, "num_hidden_layers": model.depth, "num_attention_heads": model.num_heads,
        "intermediate_size": model.blocks[0].mlp.fc1.out_features, "hidden_act": "gelu",
        "layer_norm_eps": 1e-6, "image_size": model.img_size, "patch_size": model.patch_size,
        "num_channels": model.in_chans, "qkv_bias": True,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }


def input_scale(model: nn.Module) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) the model expects for images in [0, 1]: its own (a public model's),
    else selfsup's fixed 0.5 / 0.25 (``data.spec.normalize``)."""
    mean, std = input_stats(model)
    c = getattr(model, "in_chans", 3)

    def per_channel(v, default: float) -> list[float]:
        if v is None:
            return [default] * c
        return [float(x) for x in v] if hasattr(v, "__len__") else [float(v)] * c

    return per_channel(mean, IMAGE_MEAN), per_channel(std, IMAGE_STD)


def hf_preprocessor(model: VisionTransformer) -> dict:
    """``preprocessor_config.json`` for ``AutoImageProcessor``: resize to the model's side, bilinear,
    pixels / 255, then the model's mean / std (selfsup's 0.5 / 0.25), so Hugging Face users feed the
    scale the weights were trained on. (selfsup centre-crops the short side first; for square
    images the two agree.)"""
    mean, std = input_scale(model)
    return {
        "image_processor_type": "ViTImageProcessor", "do_resize": True,
        "size": {"height": model.img_size, "width": model.img_size}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std,
        "do_convert_rgb": model.in_chans == 3,
    }


def export_hf(model: VisionTransformer, folder: str | Path) -> Path:
    """``folder/model.safetensors`` + ``config.json`` loadable by ``transformers.ViTModel``, and
    ``preprocessor_config.json`` (the input scale, ``hf_preprocessor``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in to_hf(model.state_dict()).items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(folder / "config.json", hf_config(model), indent=2)
    write_json(folder / "preprocessor_config.json", hf_preprocessor(model), indent=2)
    return folder


_TIMM_PRESETS = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}


def timm_name(model: VisionTransformer) -> str | None:
    """A timm architecture name when the shape is one of its presets (width, depth, heads, MLP ratio 4):
    ``vit_{tiny,small,base,large}_patch16_224``, with the patch and image size as overrides."""
    size = _TIMM_PRESETS.get((model.embed_dim, model.depth, model.num_heads))
    ratio = model.blocks[0].mlp.fc1.out_features / model.embed_dim
    return f"vit_{size}_patch16_224" if size and ratio == 4.0 and isinstance(model.blocks[0].mlp, Mlp) else None


def _act_name(act: nn.Module) -> str:
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if isinstance(act, nn.SiLU):
        return "silu"
    raise ValueError(f"timm export: no timm name for the activation {type(act).__name__}")


def timm_args(model: VisionTransformer) -> dict:
    """Keyword arguments of ``timm.create_model`` that build the same function as ``model``.

    Raises ValueError (one line) for what timm's VisionTransformer cannot express: "token+avg"
    pooling, packed SwiGLU MLPs (a class, not a config value), a LayerNorm eps other than 1e-6,
    a patch-embedding bias that is not ``not pre_norm``. Our "avg" pooling normalises every token,
    then averages the patch tokens: timm's ``global_pool="avg", fc_norm=False`` (its default for
    "avg", fc_norm=True, pools first and normalises after, another function).
    """
    if model.pool == "token+avg":
        raise ValueError("timm cannot express encoder.pool 'token+avg' (CLS and mean concatenated): export "
                         "--format hf or safetensors, or pretrain with encoder.pool=avg or token")
    block = model.blocks[0]
    if isinstance(block.mlp, GluMlp):
        raise ValueError("timm export: packed SwiGLU MLPs need timm's mlp_layer class, which a config cannot name; "
                         "export --format safetensors")
    fc_norm, pre_norm = isinstance(model.fc_norm, nn.LayerNorm), isinstance(model.norm_pre, nn.LayerNorm)
    eps = (model.fc_norm if fc_norm else model.norm).eps
    if abs(eps - 1e-6) > 1e-12:
        raise ValueError(f"timm's ViT uses LayerNorm eps 1e-6, this encoder {eps:g}: export --format safetensors")
    if (model.patch_embed.proj.bias is not None) == pre_norm:
        raise ValueError("timm's ViT has a patch-embedding bias exactly when it has no pre-norm; this encoder "
                         "differs: export --format safetensors")
    args = {
        "img_size": model.img_size, "patch_size": model.patch_size, "in_chans": model.in_chans,
        "embed_dim": model.embed_dim, "depth": model.depth, "num_heads": model.num_heads,
        "mlp_ratio": block.mlp.fc1.out_features / model.embed_dim, "qkv_bias": block.attn.qkv.bias is not None,
        "class_token": model.cls_token is not None, "no_embed_class": model.no_embed_class,
        "reg_tokens": 0 if model.reg_token is None else int(model.reg_token.shape[1]), "pre_norm": pre_norm,
        "global_pool": model.pool, "fc_norm": fc_norm, "act_layer": _act_name(block.mlp.act), "num_classes": 0,
    }
    if isinstance(block.ls1, LayerScale):
        args["init_values"] = 1e-5  # any value makes the gamma parameters; the weights set them
    if model.pool == "map" and model.num_prefix_tokens:
        args["pool_include_prefix"] = True  # our attention pool sees the prefix tokens too
    return args


def timm_config(model: VisionTransformer) -> dict:
    """timm's ``config.json`` (the layout of ``timm.models.push_to_hf_hub``): a real architecture
    name, ``model_args`` that rebuild this encoder exactly, and a ``pretrained_cfg`` with the input
    size and scale (mean / std; centre crop of the whole short side, bilinear)."""
    args = timm_args(model)
    mean, std = input_scale(model)
    c, s = model.in_chans, model.img_size
    return {
        "architecture": timm_name(model) or "vit_base_patch16_224",
        "num_classes": 0, "num_features": model.num_features, "global_pool": model.pool,
        "model_args": args,
        "pretrained_cfg": {"input_size": [c, s, s], "fixed_input_size": True, "interpolation": "bilinear",
                           "crop_pct": 1.0, "crop_mode": "center", "mean": mean, "std": std, "num_classes": 0},
    }


def export_timm(model: VisionTransformer, folder: str | Path) -> Path:
    """``folder/model.safetensors`` in timm names + ``config.json`` (``timm_config``), loadable with
    ``timm.create_model("local-dir:" + folder, pretrained=True)``. Raises ValueError for encoders
    timm cannot rebuild (``timm_args``)."""
    cfg = timm_config(model)  # before writing anything: a refusal leaves no half-written folder
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(folder / "config.json", cfg, indent=2)
    return folder
