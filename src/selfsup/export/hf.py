"""Hugging Face and timm interop for the ViT: rename parameters, write the config, both ways.

selfsup's ViT already uses timm's names, so a timm export is the state dict itself plus a
``config.json`` in timm's ``pretrained_cfg`` style. Hugging Face ``ViTModel`` splits the fused
qkv projection into query/key/value and names every piece differently; ``to_hf`` and ``from_hf``
translate, and ``hf_config`` writes the matching ``ViTConfig`` fields (``layer_norm_eps`` 1e-6,
exact GELU) so ``ViTModel.from_pretrained(folder, add_pooling_layer=False)`` computes the same
function: its ``last_hidden_state`` equals our ``forward_features``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from selfsup.encoders.vit import VisionTransformer

_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


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
                out[f"{layer}{_BLOCK[module]}.{kind}"] = t
        else:
            raise KeyError(f"no Hugging Face name for parameter {name!r}")
    return {prefix + k: v for k, v in out.items()}


# transformers >= 5 names the same tensors differently inside the model (Hub files keep the names above).
_HF5 = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}


def _classic(name: str) -> str:
    """A transformers-5 in-memory name ("layers.0.attention.q_proj.weight") -> the Hub file name."""
    if not name.startswith("layers."):
        return name
    i, rest = name.removeprefix("layers.").split(".", 1)
    module, kind = rest.rsplit(".", 1)
    return f"encoder.layer.{i}.{_HF5.get(module, module)}.{kind}"


def from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` (or ``ViTForImageClassification`` with "vit.") -> timm names.

    Takes both the Hub file names and transformers-5 in-memory names.
    """
    state = {_classic(k.removeprefix("vit.")): v for k, v in state.items()
             if not k.removeprefix("vit.").startswith(("pooler.", "classifier."))}
    inverse = {v: k for k, v in _BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        if name == "embeddings.cls_token":
            out["cls_token"] = t
        elif name == "embeddings.position_embeddings":
            out["pos_embed"] = t
        elif name.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + name.rsplit(".", 1)[1]] = t
        elif name.startswith("layernorm."):
            out["norm." + name.rsplit(".", 1)[1]] = t
        elif name.startswith("encoder.layer."):
            i, rest = name.removeprefix("encoder.layer.").split(".", 1)
            module, kind = rest.rsplit(".", 1)
            if module.startswith("attention.attention."):
                qkv.setdefault((i, kind), {})[module.rsplit(".", 1)[1]] = t
            else:
                out[f"blocks.{i}.{inverse[module]}.{kind}"] = t
        elif name.startswith("embeddings.mask_token"):
            continue
        else:
            raise KeyError(f"unexpected Hugging Face parameter {name!r}")
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


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


def timm_name(model: VisionTransformer) -> str | None:
    """The timm architecture name when the shape matches one of its presets (e.g. vit_tiny_patch16_224)."""
    sizes = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}
    size = sizes.get((model.embed_dim, model.depth, model.num_heads))
    return f"vit_{size}_patch{model.patch_size}_{model.img_size}" if size else None


def export_hf(model: VisionTransformer, folder: str | Path) -> Path:
    """``folder/model.safetensors`` + ``config.json`` loadable by ``transformers.ViTModel``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in to_hf(model.state_dict()).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(model), indent=2))
    return folder


def export_timm(model: VisionTransformer, folder: str | Path) -> Path:
    """``folder/model.safetensors`` in timm names + ``config.json`` (timm's pretrained_cfg style)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "architecture": timm_name(model) or "vit_custom",
        "num_classes": 0, "num_features": model.embed_dim, "global_pool": model.pool,
        "model_args": {"img_size": model.img_size, "patch_size": model.patch_size, "in_chans": model.in_chans,
                       "embed_dim": model.embed_dim, "depth": model.depth, "num_heads": model.num_heads},
        "pretrained_cfg": {"input_size": [model.in_chans, model.img_size, model.img_size],
                           "mean": [0.5] * model.in_chans, "std": [0.25] * model.in_chans},
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder
