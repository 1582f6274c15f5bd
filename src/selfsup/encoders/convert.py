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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.text import TextConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # inputs in [-1, 1] (Inception / SigLIP / Keras MobileNet / in21k ViT)

State = dict[str, torch.Tensor]


@dataclass
class Converted:
    """One public model in selfsup's terms (see the module docstring)."""

    config: EncoderConfig
    state: State
    spec: InputSpec
    image_projection: State | None = None  # {"weight": (E, D)[, "bias": (E,)]}: pooled features -> joint space
    text_config: TextConfig | None = None
    text_state: State | None = None
    logit_scale: float | None = None  # log of the multiplier, as the sources store it
    logit_bias: float | None = None
    mae_decoder: MAEDecoder | None = None
    folder: Path | None = None  # where the files are (tokenizer.json is looked for there)
    notes: list[str] = field(default_factory=list)


@dataclass
class MAEDecoder:
    """An MAE decoder in ``methods/mae.py`` names; ``config`` holds ``MAEConfig`` fields.

    ``mlp_ratio`` and ``norm_eps`` are the source's; ``methods/mae.py`` builds its decoder blocks
    with ratio 4 and eps 1e-6 (the original MAE's), which is what facebook/vit-mae-* use apart from
    Hugging Face's eps 1e-12 (a difference below 1e-6 on these activations).
    """

    config: dict
    state: State
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6


# ---------------------------------------------------------------------------------------------- shared


_HF_ACT = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
           "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu"}

# timm's ViT widths -> heads (head width 64 except these); anything else: width // 64
_HEADS = {192: 3, 384: 6, 512: 8, 640: 10, 768: 12, 896: 14, 1024: 16, 1152: 16, 1280: 16, 1408: 16, 1536: 24,
          1664: 16}


def default_heads(width: int) -> int:
    """Attention heads of a ViT of this width in timm / open_clip (``heads=`` overrides it)."""
    return _HEADS.get(width, max(width // 64, 1))


def _isqrt(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


def _depth(state: State, pattern: str) -> int:
    """Number of blocks: 1 + the largest index captured by ``pattern`` among the keys."""
    idx = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    if not idx:
        raise ValueError(f"no transformer blocks matching {pattern!r} in the state dict")
    return max(idx) + 1


def _hf_act(name: str | None, default: str) -> str:
    name = name or default
    if name not in _HF_ACT:
        raise ValueError(f"activation {name!r} has no selfsup equivalent; supported: {', '.join(_HF_ACT)}")
    return _HF_ACT[name]


def _pair(v) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def hf_preprocess(pre: dict | None, image_size: int, mean, std) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) from a Hugging Face ``preprocessor_config.json`` (defaults otherwise)."""
    if not pre:
        return image_size, tuple(mean), tuple(std)
    if pre.get("do_normalize", True):
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if pre.get("do_rescale", True) and abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f"rescale_factor {pre['rescale_factor']} is not 1/255; selfsup feeds images in [0, 1]")
    size = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return int(size or image_size), tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ---------------------------------------------------------------------------------------------- Hugging Face

# one transformer layer of ViT / ViTMAE / DINOv2, Hub file names -> timm names
_HF_VIT_LAYER = {
    "layernorm_before": "norm1", "norm1": "norm1", "layernorm_after": "norm2", "norm2": "norm2",
    "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.fc1", "mlp.weights_out": "mlp.fc2",
    "layer_scale1": "ls1", "layer_scale2": "ls2",
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
        return _hf_vit_family(_hf_classic(state), config, preprocessor, source)
    if mt in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
        return _hf_clip_family(state, config, preprocessor, source)
    raise ValueError(f"Hugging Face model_type {mt!r} is not supported; supported: {', '.join(HF_MODEL_TYPES)}")


def _hf_vit_family(state: State, cfg: dict, pre: dict | None, source: str | None) -> Converted:
    mt = cfg["model_type"]
    act, eps, mean, std, _ = _HF_VISION_DEFAULTS[mt]
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
    out |= _hf_vit_layers(state, "encoder.layer.", "blocks.")
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


# ---------------------------------------------------------------------------------------------- timm

# timm architectures whose definition sets act_layer='gelu_tanh' (timm's VisionTransformer defaults to exact GELU)
_TIMM_GELU_TANH = ("vit_base_patch32_siglip_256", "vit_base_patch32_siglip_gap_256", "vit_giantopt_patch16_siglip",
                   "vit_large_patch16_siglip_512", "vit_large_patch16_siglip_gap_512", "vit_so400m_patch16_siglip")


def timm_act(arch: str | None) -> str:
    """The activation timm's definition of ``arch`` uses (what its weights were run with in timm)."""
    arch = arch or ""
    if "quickgelu" in arch:
        return "quick_gelu"
    if arch.startswith(_TIMM_GELU_TANH):
        return "gelu_tanh"
    return "gelu"


def _timm_normalise(state: State) -> State:
    """facebookresearch DINOv2 names (``register_tokens``, ``mlp.w12``/``w3``, ``mask_token``) -> timm's."""
    state = {k: v for k, v in state.items() if k != "mask_token"}
    if "register_tokens" in state:  # registers have no position: fold CLS's into it (timm's _convert_dinov2)
        state["reg_token"] = state.pop("register_tokens")
        state["cls_token"] = state["cls_token"] + state["pos_embed"][:, :1]
        state["pos_embed"] = state["pos_embed"][:, 1:]
    return {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)): v for k, v in state.items()}


def from_timm(
    state: State,
    arch: str | None = None,
    pretrained_cfg: dict | None = None,
    model_args: dict | None = None,
    global_pool: str | None = None,
    source: str | None = None,
) -> Converted:
    """A timm ViT or ResNet state dict (+ the Hub ``config.json`` fields) -> our encoder.

    What the weights do not say comes from ``model_args`` (selfsup's own timm exports write it),
    else from the architecture name: heads by width (timm's table), the activation
    (``timm_act``), LayerNorm eps 1e-5 for CLIP-style models (``norm_pre``) and 1e-6 otherwise.
    """
    pc = pretrained_cfg or {}
    args = model_args or {}
    if "layer1.0.conv1.weight" in state:
        conv = from_torchvision(state, origin="torchvision", source=source)
        if pc.get("mean"):
            conv.config = conv.config.model_copy(update={"mean": tuple(pc["mean"]), "std": tuple(pc["std"])})
        return conv
    if "patch_embed.proj.weight" not in state:
        raise ValueError("not a timm ViT or ResNet state dict (no patch_embed.proj.weight / layer1.0.conv1.weight)")
    state = _timm_normalise({k: v for k, v in state.items() if not k.startswith("head.")})
    w = state["patch_embed.proj.weight"]
    D, C, p = w.shape[0], w.shape[1], w.shape[-1]
    cls = "cls_token" in state
    reg = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    prefix = int(cls) + reg
    L = state["pos_embed"].shape[1]
    img = args.get("img_size") or (pc.get("input_size") or [None])[-1]
    if img and (img // p) ** 2 in (L, L - prefix):
        n = (img // p) ** 2
    elif prefix and _isqrt(L - prefix):
        n = L - prefix
    elif _isqrt(L):
        n = L
    else:
        raise ValueError(f"cannot tell the patch grid from a position embedding of {L} tokens")
    no_embed_class = bool(prefix) and n == L
    fc1, fc2 = state["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc2.weight"]
    swiglu = fc1.shape[0] == 2 * fc2.shape[1]
    fc_norm = "fc_norm.weight" in state
    pool = "map" if "attn_pool.latent" in state else (global_pool or ("avg" if fc_norm or not cls else "token"))
    if pool not in ("token", "avg", "map"):
        raise ValueError(f"timm global_pool {pool!r} is not supported (token, avg, map)")
    pre_norm = "norm_pre.weight" in state
    ecfg = EncoderConfig(
        name="vit", size="custom", patch_size=p, width=D, depth=_depth(state, r"blocks\.(\d+)\."),
        heads=int(args.get("num_heads") or default_heads(D)), mlp_ratio=fc1.shape[0] / D, pool=pool,
        img_size=_isqrt(n) * p, in_chans=C, class_token=cls, reg_tokens=reg, no_embed_class=no_embed_class,
        pre_norm=pre_norm, fc_norm=fc_norm, init_values=1.0 if "blocks.0.ls1.gamma" in state else None,
        act="silu" if swiglu else timm_act(arch), mlp_layer="swiglu" if swiglu else "mlp",
        norm_eps=1e-5 if pre_norm or "_clip_" in (arch or "") else 1e-6,
        qkv_bias="blocks.0.attn.qkv.bias" in state, patch_bias="patch_embed.proj.bias" in state,
        pos_embed="learn", mean=tuple(pc.get("mean") or IMAGENET_MEAN), std=tuple(pc.get("std") or IMAGENET_STD),
        source=source,
    )
    size = int((pc.get("input_size") or [C, img or _isqrt(n) * p])[-1])
    return Converted(ecfg, state, InputSpec(modality="image", channels=C, image_size=size))


# ---------------------------------------------------------------------------------------------- open_clip

# open_clip resblock names -> timm block names
_OC_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "attn.in_proj": "attn.qkv", "attn.out_proj": "attn.proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "ls_1": "ls1", "ls_2": "ls2"}


def _oc_blocks(state: State, src: str, dst: str) -> State:
    out: State = {}
    for k, v in state.items():
        if not k.startswith(src):
            continue
        i, rest = k[len(src):].split(".", 1)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            out[f"{dst}{i}.attn.qkv.{rest.rsplit('_', 1)[1]}"] = v
            continue
        module, kind = rest.rsplit(".", 1)
        if module not in _OC_BLOCK:
            raise KeyError(f"unexpected open_clip parameter {k!r}")
        out[f"{dst}{i}.{_OC_BLOCK[module]}.{kind}"] = v
    return out


def from_open_clip(
    state: State,
    model_cfg: dict | None = None,
    preprocess_cfg: dict | None = None,
    quick_gelu: bool | None = None,
    source: str | None = None,
) -> Converted:
    """An open_clip checkpoint (+ ``open_clip_config.json``'s ``model_cfg`` / ``preprocess_cfg``).

    Native ViT towers (``visual.conv1`` ...) and timm towers (``visual.trunk.*``) for the image;
    the text transformer at the top level (CLIP) or under ``text.`` (``custom_text``: SigLIP).
    Without a config the shapes decide (head width 64, LayerNorm eps 1e-5, GELU unless ``quick_gelu``).
    """
    mc = model_cfg or {}
    vc, tc = mc.get("vision_cfg", {}), mc.get("text_cfg", {})
    if tc.get("hf_model_name") or vc.get("attentional_pool") or tc.get("embed_cls"):
        raise ValueError("open_clip models with a Hugging Face text tower or attentional pooling (CoCa) "
                         "are not supported")
    if isinstance(vc.get("layers"), (list, tuple)):
        raise ValueError("open_clip ModifiedResNet towers (RN50 ...) are not supported")
    qg = bool(mc.get("quick_gelu", False)) if quick_gelu is None else quick_gelu

    def act_of(tower: dict) -> str:  # QuickGELU, or nn.GELU(**act_kwargs)
        return "quick_gelu" if qg else ("gelu_tanh" if (tower.get("act_kwargs") or {}).get("approximate") == "tanh"
                                        else "gelu")

    eps_v = float((vc.get("norm_kwargs") or {}).get("eps", 1e-5))
    pre = preprocess_cfg or {}
    mean, std = tuple(pre.get("mean", OPENAI_CLIP_MEAN)), tuple(pre.get("std", OPENAI_CLIP_STD))
    if any(k.startswith("visual.trunk.") for k in state):  # timm vision tower
        trunk = {k.removeprefix("visual.trunk."): v for k, v in state.items() if k.startswith("visual.trunk.")}
        head = trunk.pop("head.weight", None), trunk.pop("head.bias", None)
        conv = from_timm(trunk, arch=vc.get("timm_model_name"), global_pool=vc.get("timm_pool") or None,
                         source=source)
        conv.config = conv.config.model_copy(update={"mean": mean, "std": std})
        if "visual.head.proj.weight" in state:
            conv.image_projection = {k: state[f"visual.head.proj.{k}"] for k in ("weight", "bias")
                                     if f"visual.head.proj.{k}" in state}
        elif head[0] is not None:  # the trunk's own classifier is the projection
            conv.image_projection = {"weight": head[0]} | ({"bias": head[1]} if head[1] is not None else {})
    else:
        v = {k.removeprefix("visual."): t for k, t in state.items() if k.startswith("visual.")}
        out = _oc_blocks(v, "transformer.resblocks.", "blocks.")
        out["patch_embed.proj.weight"] = v["conv1.weight"]
        out["cls_token"] = v["class_embedding"].reshape(1, 1, -1)
        out["pos_embed"] = v["positional_embedding"].unsqueeze(0)
        for a, b in (("ln_pre", "norm_pre"), ("ln_post", "norm")):
            for kind in ("weight", "bias"):
                if f"{a}.{kind}" in v:
                    out[f"{b}.{kind}"] = v[f"{a}.{kind}"]
        if vc.get("pos_embed_type", "learnable") != "learnable":
            raise ValueError("open_clip vision towers with fixed position embeddings are not supported")
        D, p = out["patch_embed.proj.weight"].shape[0], out["patch_embed.proj.weight"].shape[-1]
        grid = _isqrt(out["pos_embed"].shape[1] - 1)
        pool = {"tok": "token", "avg": "avg"}.get(vc.get("pool_type", "tok"))
        if pool is None or grid is None:
            raise ValueError(f"open_clip vision pool_type {vc.get('pool_type')!r} / grid not supported")
        fc_norm = bool(vc.get("final_ln_after_pool", False)) and pool == "avg"
        if fc_norm:
            out["fc_norm.weight"], out["fc_norm.bias"] = out.pop("norm.weight"), out.pop("norm.bias")
        ecfg = EncoderConfig(
            name="vit", size="custom", patch_size=p, width=D, depth=_depth(out, r"blocks\.(\d+)\."),
            heads=D // int(vc["head_width"]) if "head_width" in vc else default_heads(D),
            mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
            pool=pool, img_size=grid * p, in_chans=out["patch_embed.proj.weight"].shape[1],
            pre_norm="norm_pre.weight" in out, fc_norm=fc_norm,
            init_values=1.0 if "blocks.0.ls1.gamma" in out else None, act=act_of(vc), norm_eps=eps_v,
            patch_bias=False, pos_embed="learn", mean=mean, std=std, source=source,
        )
        conv = Converted(ecfg, out, InputSpec(channels=ecfg.in_chans, image_size=grid * p))
        if "proj" in v:
            conv.image_projection = {"weight": v["proj"].T.contiguous()}
    conv.spec = InputSpec(modality="image_text", channels=conv.config.in_chans or 3,
                          image_size=int(_pair(vc.get("image_size", conv.spec.image_size))))
    if "logit_scale" in state:
        conv.logit_scale = float(state["logit_scale"].reshape(-1)[0])
    if state.get("logit_bias") is not None:
        conv.logit_bias = float(state["logit_bias"].reshape(-1)[0])
    conv.text_config, conv.text_state = _oc_text(state, tc, act_of(tc))
    return conv


def _oc_text(state: State, tc: dict, act: str) -> tuple[TextConfig, State]:
    prefix = "text." if any(k.startswith("text.token_embedding") for k in state) else ""
    t = {k.removeprefix(prefix): v for k, v in state.items()
         if k.startswith(prefix) and not k.startswith("visual.") and not k.startswith("logit_")}
    out = _oc_blocks(t, "transformer.resblocks.", "blocks.")
    out["token_embedding.weight"] = t["token_embedding.weight"]
    out["positional_embedding"] = t["positional_embedding"].unsqueeze(0)
    out["ln_final.weight"], out["ln_final.bias"] = t["ln_final.weight"], t["ln_final.bias"]
    if "text_projection.weight" in t:  # nn.Linear (proj_bias configs)
        out["text_projection.weight"] = t["text_projection.weight"]
        if "text_projection.bias" in t:
            out["text_projection.bias"] = t["text_projection.bias"]
    else:  # a (width, embed) parameter used as x @ P
        out["text_projection.weight"] = t["text_projection"].T.contiguous()
    V, D = out["token_embedding.weight"].shape
    causal = not tc.get("no_causal_mask", False)
    pool = tc.get("pool_type", "argmax")
    if pool not in ("argmax", "eos", "last", "first"):
        raise ValueError(f"open_clip text pool_type {pool!r} is not supported")
    cfg = TextConfig(
        vocab_size=V, context_length=out["positional_embedding"].shape[1], width=D,
        depth=_depth(out, r"blocks\.(\d+)\."), heads=int(tc.get("heads", D // 64)),
        output_dim=out["text_projection.weight"].shape[0], causal=causal,
        pool={"first": "cls"}.get(pool, pool), mlp_ratio=out["blocks.0.mlp.fc1.weight"].shape[0] / D,
        act=act, norm_eps=float((tc.get("norm_kwargs") or {}).get("eps", 1e-5)),
        proj_bias="text_projection.bias" in out, init_values=1.0 if "blocks.0.ls1.gamma" in out else None,
        pad_id=int(tc.get("pad_id", 0)), eos_id=tc.get("eos_id"),
        pad_mask=bool(tc.get("use_pad_mask", False)),
    )
    return cfg, out


# ---------------------------------------------------------------------------------------------- torchvision


def from_torchvision(state: State, origin: str = "torchvision", width_mult: float | None = None,
                     source: str | None = None) -> Converted:
    """A torchvision-named ResNet-18/34/50 or MobileNetV2 state dict (``fc`` / ``classifier`` dropped).

    ``origin="keras"`` (MobileNetV2 only): BatchNorm eps 1e-3, TensorFlow "same" padding and inputs
    in [-1, 1] (mean 0.5, std 0.5): the conventions of Keras Applications weights.
    """
    if origin not in ("torchvision", "keras"):
        raise ValueError(f"origin must be torchvision or keras, not {origin!r}")
    spec = InputSpec(modality="image", channels=3, image_size=224)
    if "features.0.0.weight" in state:
        from selfsup.encoders.mobilenet import width_from_state_dict  # noqa: PLC0415

        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        keras = origin == "keras"
        cfg = EncoderConfig(
            name="mobilenetv2", width_mult=width_mult or width_from_state_dict(state),
            in_chans=state["features.0.0.weight"].shape[1], bn_eps=1e-3 if keras else None, tf_padding=keras,
            mean=HALF if keras else IMAGENET_MEAN, std=HALF if keras else IMAGENET_STD, source=source,
        )
        spec.channels = cfg.in_chans
        return Converted(cfg, state, spec)
    if "layer1.0.conv1.weight" in state:
        if origin == "keras":
            raise ValueError("origin=keras is only known for MobileNetV2")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        blocks = [_depth(state, rf"layer{i}\.(\d+)\.") for i in range(1, 5)]
        bottleneck = "layer1.0.conv3.weight" in state
        names = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
                 (True, (3, 4, 6, 3)): "resnet50"}
        name = names.get((bottleneck, tuple(blocks)))
        if name is None:
            raise ValueError(f"ResNet with blocks {blocks} (bottleneck={bottleneck}) is not supported: 18, 34, 50")
        conv1 = state["conv1.weight"]
        cfg = EncoderConfig(name=name, cifar_stem=conv1.shape[-1] == 3, in_chans=conv1.shape[1],
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, source=source)
        spec.channels = conv1.shape[1]
        return Converted(cfg, state, spec)
    raise ValueError("not a torchvision ResNet or MobileNetV2 state dict (no layer1.0.conv1 / features.0.0 weights)")


__all__ = [
    "Converted", "MAEDecoder", "from_hf", "from_timm", "from_open_clip", "from_torchvision", "timm_act",
    "default_heads", "hf_preprocess", "IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
    "HF_MODEL_TYPES",
]
