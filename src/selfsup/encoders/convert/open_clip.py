"""open_clip checkpoints: native ViT CLIP models and timm-trunk towers (SigLIP in open_clip)."""

from __future__ import annotations

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.convert.common import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Converted,
    State,
    _depth,
    _isqrt,
    _pair,
    default_heads,
)
from selfsup.encoders.convert.timm import from_timm
from selfsup.encoders.text import TextConfig

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


