"""Hugging Face ``transformers`` checkpoints: ViT, ViTMAE (+ decoder), DINOv2 (+ registers), CLIP, SigLIP."""

from __future__ import annotations

import re

import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.convert.common import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Converted,
    MAEDecoder,
    State,
    _depth,
    _hf_act,
    _isqrt,
    _pair,
    hf_preprocess,
)
from selfsup.encoders.text import TextConfig

# one transformer layer of ViT / ViTMAE / DINOv2: timm names -> the Hub's file names (export writes these)
HF_VIT_BLOCK = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
                "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
# ... and every name the Hub's files and transformers use for them -> timm names (import reads these)
_HF_VIT_LAYER = {v: k for k, v in HF_VIT_BLOCK.items()} | {
    "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2", "layer_scale1": "ls1", "layer_scale2": "ls2",
}
_QKV = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
# transformers >= 5 in-memory names -> Hub file names
_HF5 = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}


def _hf_classic(state: State) -> State:
    """transformers-5 in-memory names ("layers.0.attention.q_proj", "mlp.gate_proj") -> the Hub's."""
    out: State = {}
    gates: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        k = re.sub(r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2.", k) if not k.startswith("decoder.") else k
        for new, old in _HF5.items():
            k = k.replace(new + ".", old + ".")
        m = re.match(r"(.*\.mlp)\.(gate_proj|up_proj|down_proj)\.(weight|bias)$", k)
        if m and m.group(2) != "down_proj":
            gates.setdefault(f"{m.group(1)}.weights_in.{m.group(3)}", {})[m.group(2)] = v
            continue
        if m:
            k = f"{m.group(1)}.weights_out.{m.group(3)}"
        out[k] = v
    for k, parts in gates.items():  # SwiGLU: weights_in = [gate; up]
        out[k] = torch.cat([parts["gate_proj"], parts["up_proj"]], dim=0)
    return out


def _hf_vit_layers(state: State, src: str, dst: str) -> State:
    """``{src}{i}.<HF layer names>`` -> ``{dst}{i}.<timm block names>`` (qkv fused)."""
    out: State = {}
    qkv: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for k, v in state.items():
        if not k.startswith(src):
            continue
        i, rest = k[len(src):].split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module.startswith("attention.attention."):
            qkv.setdefault((i, kind), {})[_QKV[module.rsplit(".", 1)[1]]] = v
        elif module in _HF_VIT_LAYER:
            out[f"{dst}{i}.{_HF_VIT_LAYER[module]}.{'gamma' if kind == 'lambda1' else kind}"] = v
        else:
            raise KeyError(f"unexpected Hugging Face parameter {k!r}")
    for (i, kind), parts in qkv.items():
        out[f"{dst}{i}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def _hf_clip_layers(state: State, src: str, dst: str) -> State:
    """CLIP / SigLIP encoder layers (``layer_norm1``, ``self_attn.q_proj``, ``mlp.fc1``) -> timm blocks."""
    names = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    out: State = {}
    qkv: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for k, v in state.items():
        if not k.startswith(src):
            continue
        i, rest = k[len(src):].split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module.startswith("self_attn.") and module.split(".")[1] in _QKV:
            qkv.setdefault((i, kind), {})[_QKV[module.split(".")[1]]] = v
        elif module in names:
            out[f"{dst}{i}.{names[module]}.{kind}"] = v
        else:
            raise KeyError(f"unexpected Hugging Face parameter {k!r}")
    for (i, kind), parts in qkv.items():
        out[f"{dst}{i}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


_HF_VISION_DEFAULTS = {  # model_type -> (act, eps, mean, std, patch)
    "vit": ("gelu", 1e-12, HALF, HALF, 16),
    "vit_mae": ("gelu", 1e-12, IMAGENET_MEAN, IMAGENET_STD, 16),
    "dinov2": ("gelu", 1e-6, IMAGENET_MEAN, IMAGENET_STD, 14),
    "dinov2_with_registers": ("gelu", 1e-6, IMAGENET_MEAN, IMAGENET_STD, 14),
    "clip": ("quick_gelu", 1e-5, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, 32),
    "siglip": ("gelu_pytorch_tanh", 1e-6, HALF, HALF, 16),
}
HF_MODEL_TYPES = ("vit", "vit_mae", "dinov2", "dinov2_with_registers", "clip", "clip_vision_model", "siglip",
                  "siglip_vision_model")


def from_hf(state: State, config: dict, preprocessor: dict | None = None, source: str | None = None) -> Converted:
    """A Hugging Face model folder's weights + ``config.json`` (+ ``preprocessor_config.json``)."""
    mt = config.get("model_type")
    if mt in ("vit", "vit_mae", "dinov2", "dinov2_with_registers"):
        return _hf_vit_family(_hf_classic(state), config, preprocessor, source)  # classic names: the decoder too
    if mt in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
        return _hf_clip_family(state, config, preprocessor, source)
    raise ValueError(f"Hugging Face model_type {mt!r} is not supported; supported: {', '.join(HF_MODEL_TYPES)}")


def hf_vit_state(state: State) -> State:
    """A ViT / ViTMAE / DINOv2 state dict in Hugging Face names (Hub files or transformers-5 in-memory names,
    with or without a ``vit.`` / ``dinov2.`` wrapper prefix) -> timm names, the encoder's only (no
    pooler, classifier or decoder): the one map from Hugging Face ViT names, for loading and for
    ``export.hf.from_hf``."""
    state = _hf_classic(state)
    for prefix in ("vit.", "dinov2.", "model."):  # ...ForImageClassification / ForPreTraining wrappers
        if any(k.startswith(prefix + "embeddings.") for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    out: State = {}
    for k, v in state.items():
        if k == "embeddings.cls_token":
            out["cls_token"] = v
        elif k == "embeddings.position_embeddings":
            out["pos_embed"] = v
        elif k == "embeddings.register_tokens":
            out["reg_token"] = v
        elif k.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("layernorm."):
            out["norm." + k.rsplit(".", 1)[1]] = v
    return out | _hf_vit_layers(state, "encoder.layer.", "blocks.")


def _hf_vit_family(state: State, cfg: dict, pre: dict | None, source: str | None) -> Converted:
    mt = cfg["model_type"]
    act, eps, mean, std, _ = _HF_VISION_DEFAULTS[mt]
    out = hf_vit_state(state)
    for prefix in ("vit.", "dinov2.", "model."):
        if any(k.startswith(prefix + "embeddings.") for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    D = out["patch_embed.proj.weight"].shape[0]
    p = out["patch_embed.proj.weight"].shape[-1]
    swiglu = bool(cfg.get("use_swiglu_ffn", False))
    reg = int(out["reg_token"].shape[1]) if "reg_token" in out else 0
    if reg:  # DINOv2 registers carry no position: fold CLS's into the token, as timm does
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    n_pos = out["pos_embed"].shape[1] - (0 if reg else 1)
    grid = _isqrt(n_pos)
    if grid is None:
        raise ValueError(f"position embedding of {n_pos} patches is not a square grid")
    img_size = grid * p
    size, mean, std = hf_preprocess(pre, _pair(cfg.get("image_size", img_size)), mean, std)
    ecfg = EncoderConfig(
        name="vit", size="custom", patch_size=p, width=D, depth=_depth(out, r"blocks\.(\d+)\."),
        heads=int(cfg.get("num_attention_heads", 12)), mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
        pool="token", img_size=img_size, in_chans=out["patch_embed.proj.weight"].shape[1],
        reg_tokens=reg, no_embed_class=bool(reg), init_values=float(cfg.get("layerscale_value", 1.0))
        if "blocks.0.ls1.gamma" in out else None,
        act="silu" if swiglu else _hf_act(cfg.get("hidden_act"), act), mlp_layer="swiglu" if swiglu else "mlp",
        norm_eps=float(cfg.get("layer_norm_eps", eps)), qkv_bias="blocks.0.attn.qkv.bias" in out,
        patch_bias="patch_embed.proj.bias" in out, pos_embed="sincos" if mt == "vit_mae" else "learn",
        pos_antialias=mt == "dinov2_with_registers", mean=mean, std=std, source=source,
    )
    conv = Converted(ecfg, out, InputSpec(modality="image", channels=ecfg.in_chans, image_size=size))
    if mt == "vit_mae" and any(k.startswith("decoder.") for k in state):
        conv.mae_decoder = _hf_mae_decoder(state, cfg)
    return conv


def _hf_mae_decoder(state: State, cfg: dict) -> MAEDecoder:
    dec = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    # the Hub's files say decoder_layers.{i}; transformers 5 writes decoder_encoder.layer.{i}
    dec = {re.sub(r"^decoder_(?:layers|encoder\.layer)\.", "decoder_layers.", k): v for k, v in dec.items()}
    out = {k: v for k, v in dec.items() if not k.startswith("decoder_layers.")}
    out |= _hf_vit_layers(_hf_classic({k: v for k, v in dec.items() if k.startswith("decoder_layers.")}),
                          "decoder_layers.", "decoder_blocks.")
    width = out["decoder_embed.weight"].shape[0]
    config = {
        "decoder_width": width, "decoder_depth": _depth(out, r"decoder_blocks\.(\d+)\."),
        "decoder_heads": int(cfg.get("decoder_num_attention_heads", 16)),
        "norm_pix_loss": bool(cfg.get("norm_pix_loss", False)), "mask_ratio": float(cfg.get("mask_ratio", 0.75)),
    }
    return MAEDecoder(config, out, out["decoder_blocks.0.mlp.fc1.weight"].shape[0] / width,
                      float(cfg.get("layer_norm_eps", 1e-12)))


def _hf_clip_family(state: State, cfg: dict, pre: dict | None, source: str | None) -> Converted:
    mt = cfg["model_type"]
    siglip = mt.startswith("siglip")
    vcfg = cfg.get("vision_config", cfg) if mt in ("clip", "siglip") else cfg
    act, eps, mean, std, _ = _HF_VISION_DEFAULTS["siglip" if siglip else "clip"]
    if not any(k.startswith("vision_model.") for k in state):  # a vision-only model saved by transformers 5
        state = {(k if k.startswith("visual_projection.") else "vision_model." + k): t for k, t in state.items()}
    v = {k.removeprefix("vision_model."): t for k, t in state.items() if k.startswith("vision_model.")}
    out: State = _hf_clip_layers(v, "encoder.layers.", "blocks.")
    for k, t in v.items():
        if k == "embeddings.class_embedding":
            out["cls_token"] = t.reshape(1, 1, -1)
        elif k.startswith("embeddings.patch_embedding."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = t
        elif k == "embeddings.position_embedding.weight":
            out["pos_embed"] = t.unsqueeze(0)
        elif k.startswith("pre_layrnorm."):
            out["norm_pre." + k.rsplit(".", 1)[1]] = t
        elif k.startswith("post_layernorm."):
            out["norm." + k.rsplit(".", 1)[1]] = t
        elif k.startswith("head."):
            out |= _hf_map_head(k.removeprefix("head."), t)
    D, p = out["patch_embed.proj.weight"].shape[0], out["patch_embed.proj.weight"].shape[-1]
    cls = "cls_token" in out
    grid = _isqrt(out["pos_embed"].shape[1] - int(cls))
    if grid is None:
        raise ValueError("CLIP/SigLIP position embedding is not a square grid")
    pool = "token" if cls else ("map" if "attn_pool.latent" in out else "avg")
    size, mean, std = hf_preprocess(pre, grid * p, mean, std)
    heads = int(vcfg.get("num_attention_heads", 12))
    ecfg = EncoderConfig(
        name="vit", size="custom", patch_size=p, width=D, depth=_depth(out, r"blocks\.(\d+)\."), heads=heads,
        mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D, pool=pool, img_size=grid * p,
        in_chans=out["patch_embed.proj.weight"].shape[1], class_token=cls, pre_norm="norm_pre.weight" in out,
        act=_hf_act(vcfg.get("hidden_act"), act), norm_eps=float(vcfg.get("layer_norm_eps", eps)),
        patch_bias="patch_embed.proj.bias" in out, pos_embed="learn", mean=mean, std=std, source=source,
    )
    conv = Converted(ecfg, out, InputSpec(modality="image_text" if mt in ("clip", "siglip") else "image",
                                          channels=ecfg.in_chans, image_size=size))
    if "visual_projection.weight" in state:
        conv.image_projection = {"weight": state["visual_projection.weight"]}
    if "logit_scale" in state:
        conv.logit_scale = float(state["logit_scale"].reshape(-1)[0])
    if "logit_bias" in state:
        conv.logit_bias = float(state["logit_bias"].reshape(-1)[0])
    if any(k.startswith("text_model.") for k in state):
        conv.text_config, conv.text_state = _hf_text(state, cfg.get("text_config", {}), siglip)
    return conv


def _hf_map_head(k: str, t: torch.Tensor) -> State:
    """SigLIP's MAP head (``probe``, ``attention`` (nn.MultiheadAttention), ``layernorm``, ``mlp``) -> attn_pool."""
    if k == "probe":
        return {"attn_pool.latent": t}
    if k.startswith("attention.in_proj_"):
        kind = k.removeprefix("attention.in_proj_")
        D = t.shape[0] // 3
        return {f"attn_pool.q.{kind}": t[:D], f"attn_pool.kv.{kind}": t[D:]}
    if k.startswith("attention.out_proj."):
        return {"attn_pool.proj." + k.rsplit(".", 1)[1]: t}
    if k.startswith("layernorm."):
        return {"attn_pool.norm." + k.rsplit(".", 1)[1]: t}
    if k.startswith("mlp."):
        return {"attn_pool." + k: t}
    raise KeyError(f"unexpected SigLIP head parameter {k!r}")


def _hf_text(state: State, tcfg: dict, siglip: bool) -> tuple[TextConfig, State]:
    t = {k.removeprefix("text_model."): v for k, v in state.items() if k.startswith("text_model.")}
    out = _hf_clip_layers(t, "encoder.layers.", "blocks.")
    out["token_embedding.weight"] = t["embeddings.token_embedding.weight"]
    out["positional_embedding"] = t["embeddings.position_embedding.weight"].unsqueeze(0)
    for kind in ("weight", "bias"):
        out[f"ln_final.{kind}"] = t[f"final_layer_norm.{kind}"]
    if siglip:
        out["text_projection.weight"], out["text_projection.bias"] = t["head.weight"], t["head.bias"]
    else:
        out["text_projection.weight"] = state["text_projection.weight"]
    V, D = out["token_embedding.weight"].shape
    eos = tcfg.get("eos_token_id", 1 if siglip else 49407)
    cfg = TextConfig(
        vocab_size=V, context_length=out["positional_embedding"].shape[1], width=D,
        depth=_depth(out, r"blocks\.(\d+)\."), heads=int(tcfg.get("num_attention_heads", 12 if siglip else 8)),
        output_dim=out["text_projection.weight"].shape[0], causal=not siglip,
        pool="last" if siglip else ("argmax" if eos == 2 else "eos"),
        mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
        act=_hf_act(tcfg.get("hidden_act"), "gelu_pytorch_tanh" if siglip else "quick_gelu"),
        norm_eps=float(tcfg.get("layer_norm_eps", 1e-6 if siglip else 1e-5)), proj_bias=siglip,
        pad_id=int(tcfg.get("pad_token_id", 1) or 0), eos_id=eos, pad_mask=not siglip,
    )
    return cfg, out


