"""timm checkpoints (our names already) and facebookresearch DINO / DINOv2 / MAE files in timm-like names."""

from __future__ import annotations

import re

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.convert.common import IMAGENET_MEAN, IMAGENET_STD, Converted, State, _depth, _isqrt, default_heads
from selfsup.encoders.convert.torchvision import from_torchvision

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


