"""Public pretrained models as selfsup encoders: parse a reference, fetch its files, convert, build.

    from selfsup.encoders.hub import load_pretrained, load_clip
    encoder, spec, cfg = load_pretrained("hf:facebook/dinov2-small")
    tokens = encoder.forward_features(to_input(encoder, images01))
    towers = load_clip("open_clip:ViT-B-32/laion2b_s34b_b79k")

A reference is ``[SCHEME:]BODY[?key=value&...]``:

- ``hf:ORG/NAME`` (Hugging Face Hub id) or ``hf:FOLDER`` (a ``save_pretrained`` folder):
  ViT, ViTMAE, DINOv2 (+ registers), CLIP, SigLIP (``config.json`` ``model_type`` decides).
- ``timm:NAME.TAG`` (the Hub repo ``timm/NAME.TAG``: ``config.json`` + ``model.safetensors``) or
  ``timm:FILE`` (a state dict in timm names; add ``?arch=NAME`` so timm's rules for that
  architecture apply: activation, LayerNorm eps, heads).
- ``open_clip:ARCH/TAG`` (a built-in table of the common open_clip tags, e.g.
  ``ViT-B-32/laion2b_s34b_b79k``, ``ViT-B-16/openai``), ``open_clip:ORG/NAME`` (any Hub repo with
  ``open_clip_config.json``), or ``open_clip:FILE|FOLDER``.
- ``torchvision:FILE`` (a ResNet-18/34/50 or MobileNetV2 state dict in torchvision names).
- ``selfsup:NAME``: a model shipped in the package (``encoders.generalist``: ``selfsup:series-small``).
- no scheme: a local file or folder, its format told by its files and key names.

Options (``?key=value`` in the reference, keyword arguments, or a sidecar JSON object next to a
weights file: ``weights.pt`` -> ``weights.json``; later ones win):
``origin=keras`` (torchvision MobileNetV2 weights from Keras: BatchNorm eps 1e-3, TensorFlow
"same" padding, inputs in [-1, 1]), ``width_mult`` (MobileNetV2, else read from the shapes),
``arch`` (timm name for a local timm file), ``quick_gelu`` (open_clip), ``revision`` (Hub
downloads), ``image_size`` (the side images are read at, ``spec.image_size``; default the size the
model was trained at; a ViT interpolates its position embeddings), and any ``EncoderConfig``
field, applied after conversion (e.g. ``act=quick_gelu``, ``heads=16``, ``pool=avg``,
``mean=0.5,0.5,0.5``).

Downloads go through ``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1`` uses the cache
only). Weights are read from safetensors, or with ``torch.load(weights_only=True)``, never by
unpickling arbitrary objects. What a loaded encoder expects travels in its ``EncoderConfig``
(``mean``/``std``, ``img_size``, ``patch_size``...), which alone rebuilds it (``build_encoder``).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from tokenizers import Tokenizer
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder, to_input
from selfsup.encoders.convert import (
    Converted,
    MAEDecoder,
    from_hf,
    from_open_clip,
    from_timm,
    from_torchvision,
)
from selfsup.encoders.text import TextConfig, TextTransformer, build_text
from selfsup.encoders.weightfiles import json_beside, read_state_dict, weights_in

SCHEMES = ("hf", "timm", "open_clip", "torchvision", "selfsup")  # selfsup: the shipped models (encoders.generalist)
LOADER_OPTIONS = ("origin", "width_mult", "arch", "quick_gelu", "revision", "image_size")

# open_clip (ARCH, TAG) -> (Hub repo, quick_gelu), from open_clip's pretrained.py; others: open_clip:ORG/NAME
OPEN_CLIP_HUB: dict[tuple[str, str], tuple[str, bool]] = {
    ("ViT-B-32", "openai"): ("timm/vit_base_patch32_clip_224.openai", True),
    ("ViT-B-32", "laion400m_e31"): ("timm/vit_base_patch32_clip_224.laion400m_e31", True),
    ("ViT-B-32", "laion400m_e32"): ("timm/vit_base_patch32_clip_224.laion400m_e32", True),
    ("ViT-B-32", "laion2b_e16"): ("timm/vit_base_patch32_clip_224.laion2b_e16", False),
    ("ViT-B-32", "laion2b_s34b_b79k"): ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", False),
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): ("laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", False),
    ("ViT-B-16", "openai"): ("timm/vit_base_patch16_clip_224.openai", True),
    ("ViT-B-16", "laion400m_e31"): ("timm/vit_base_patch16_clip_224.laion400m_e31", False),
    ("ViT-B-16", "laion400m_e32"): ("timm/vit_base_patch16_clip_224.laion400m_e32", False),
    ("ViT-B-16", "laion2b_s34b_b88k"): ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", False),
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): ("laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", False),
    ("ViT-L-14", "openai"): ("timm/vit_large_patch14_clip_224.openai", True),
    ("ViT-L-14", "laion2b_s32b_b82k"): ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", False),
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): ("laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", False),
    ("ViT-H-14", "laion2b_s32b_b79k"): ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", False),
    ("ViT-B-16-SigLIP", "webli"): ("timm/ViT-B-16-SigLIP", False),
    ("ViT-B-16-SigLIP-256", "webli"): ("timm/ViT-B-16-SigLIP-256", False),
    ("ViT-L-16-SigLIP-256", "webli"): ("timm/ViT-L-16-SigLIP-256", False),
    ("ViT-SO400M-14-SigLIP", "webli"): ("timm/ViT-SO400M-14-SigLIP", False),
}

_NO_TOKENIZER = (
    "{what} has no tokenizer.json, and selfsup reads tokenizers only from that file (the `tokenizers` "
    "library); the text tower works on token ids (B, {L}). SigLIP's Hub folders ship a SentencePiece "
    "spiece.model whose Python tokenizer also lowercases and strips punctuation: tokenise with transformers' "
    "SiglipTokenizer (needs sentencepiece; padding='max_length', max_length={L}) and pass the ids. CLIP-family "
    "models (vocabulary 49408) share OpenAI's BPE: put the tokenizer.json (and special_tokens_map.json) of "
    "any Hugging Face CLIP folder, e.g. openai/clip-vit-base-patch32, beside the weights and load again."
)


# ---------------------------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: ``scheme`` (None for a bare local path), ``name``, ``options``."""

    scheme: str | None
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        q = ("?" + urllib.parse.urlencode(self.options)) if self.options else ""
        return f"{self.scheme + ':' if self.scheme else ''}{self.name}{q}"


def parse_ref(ref: str | Path) -> ModelRef:
    """``[SCHEME:]BODY[?key=value&...]`` -> ``ModelRef`` (see the module docstring)."""
    s, options = str(ref), {}
    if "?" in s and "=" in s.rsplit("?", 1)[1]:
        s, query = s.rsplit("?", 1)
        options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    m = re.match(r"^([a-z_]+):(?!//)(.+)$", s)
    if m and m.group(1) in SCHEMES:
        return ModelRef(m.group(1), m.group(2), options)
    if m and not Path(s).exists() and len(m.group(1)) > 1:
        raise ValueError(f"unknown model scheme {m.group(1)!r} in {ref!r}; use one of {', '.join(SCHEMES)}")
    return ModelRef(None, s, options)


def _hub_download(repo: str, patterns: list[str], fallback: str | None, revision: str | None) -> Path:
    """Snapshot of ``repo`` (only ``patterns``) in the huggingface_hub cache; ``fallback`` file if no weights."""
    from huggingface_hub import hf_hub_download, snapshot_download  # noqa: PLC0415

    folder = Path(snapshot_download(repo, allow_patterns=patterns, revision=revision))
    if fallback and not any(folder.glob("*.safetensors")):
        hf_hub_download(repo, fallback, revision=revision)
        folder = Path(snapshot_download(repo, allow_patterns=[*patterns, fallback], revision=revision))
    return folder


def resolve(ref: ModelRef) -> Path:
    """The local file or folder of ``ref``, downloading public models through huggingface_hub."""
    path = Path(ref.name).expanduser()
    if path.exists():
        return path
    rev = ref.options.get("revision")
    if ref.scheme == "hf":
        return _hub_download(ref.name, ["*.json", "*.safetensors", "*.txt"], "pytorch_model.bin", rev)
    if ref.scheme == "timm":
        if "." not in ref.name:
            raise ValueError(f"timm:{ref.name}: give NAME.TAG (e.g. vit_small_patch16_224.dino), "
                             "the Hub repo timm/NAME.TAG")
        return _hub_download(f"timm/{ref.name}", ["config.json", "model.safetensors"], "pytorch_model.bin", rev)
    if ref.scheme == "open_clip":
        repo = _open_clip_repo(ref.name)[0]
        files = ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"]
        return _hub_download(repo, files, "open_clip_pytorch_model.bin", rev)
    hint = "" if ref.scheme else "; public models need a scheme: hf:ORG/NAME, timm:NAME.TAG, open_clip:ARCH/TAG"
    raise FileNotFoundError(f"{ref.name}: no such file or folder{hint}")


def _open_clip_repo(name: str) -> tuple[str, bool | None]:
    name = name.removeprefix("hf-hub:")
    arch, _, tag = name.partition("/")
    if (arch, tag) in OPEN_CLIP_HUB:
        return OPEN_CLIP_HUB[(arch, tag)]
    if not tag:
        raise ValueError(f"open_clip:{name}: give ARCH/TAG (e.g. ViT-B-32/laion2b_s34b_b79k) or a Hub repo ORG/NAME")
    return name, (True if arch.endswith("-quickgelu") else None)


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin")


def _detect(state: dict[str, torch.Tensor]) -> str:
    """Which origin's names a bare state dict uses."""
    keys = list(state)
    if any(k.startswith("visual.") for k in keys):
        return "open_clip"
    if any(k.startswith(("vision_model.", "embeddings.", "encoder.layer.", "vit.", "dinov2.")) for k in keys):
        return "hf"
    if "patch_embed.proj.weight" in state:
        return "timm"
    if "layer1.0.conv1.weight" in state or "features.0.0.weight" in state:
        return "torchvision"
    raise ValueError(f"cannot tell which library these weights come from (first keys: {keys[:4]})")


def read_pretrained(ref: str | Path | ModelRef, **options) -> Converted:
    """Reference -> ``Converted`` (configs + state dicts in selfsup names), nothing built yet."""
    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    path = resolve(ref)
    opts: dict = {}
    if path.is_file() and path.with_suffix(".json").is_file() and path.suffix != ".json":
        opts |= json_beside(path.with_suffix(".json"))  # sidecar
    opts |= ref.options | options
    source = str(ModelRef(ref.scheme, ref.name))
    folder = path if path.is_dir() else path.parent
    scheme = ref.scheme
    if path.is_dir():
        cfg = json_beside(folder / "config.json")
        if scheme is None:
            scheme = ("hf" if "model_type" in cfg else "timm" if "architecture" in cfg
                      else "open_clip" if (folder / "open_clip_config.json").is_file() else None)
        if scheme is None:
            raise ValueError(f"{path}: no config.json (Hugging Face / timm) or open_clip_config.json")
        weights = weights_in(folder, OPEN_CLIP_WEIGHTS if scheme == "open_clip" else HF_WEIGHTS)
    else:
        weights = path
    state = read_state_dict(weights)
    scheme = scheme or _detect(state)

    if scheme == "hf":
        cfg = json_beside(folder / "config.json")
        if "model_type" not in cfg:
            raise ValueError(f"{folder}: Hugging Face weights need the model's config.json beside them")
        conv = from_hf(state, cfg, json_beside(folder / "preprocessor_config.json"), source)
    elif scheme == "timm":
        cfg = json_beside(folder / "config.json") if path.is_dir() else {}
        conv = from_timm(state, opts.pop("arch", None) or cfg.get("architecture"), cfg.get("pretrained_cfg"),
                         cfg.get("model_args"), cfg.get("global_pool") or None, source)
    elif scheme == "open_clip":
        oc = json_beside(folder / "open_clip_config.json")
        qg = opts.pop("quick_gelu", None)
        if qg is None and ref.scheme == "open_clip" and not Path(ref.name).exists():
            qg = _open_clip_repo(ref.name)[1]
        conv = from_open_clip(state, oc.get("model_cfg"), oc.get("preprocess_cfg"),
                              None if qg is None else _truthy(qg), source)
    else:
        conv = from_torchvision(state, opts.pop("origin", "torchvision"),
                                float(opts.pop("width_mult")) if "width_mult" in opts else None, source)
    if "image_size" in opts:
        side = opts.pop("image_size")
        try:
            conv.spec.image_size = int(side)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: image_size={side!r} is not a whole number of pixels") from None
    for key in LOADER_OPTIONS:
        opts.pop(key, None)
    if opts:
        conv.config = _override(conv.config, opts)
    if conv.text_config is not None:
        _attach_tokenizer_ids(conv, folder)
    conv.folder = folder
    conv.notes.append(f"weights: {weights}")
    return conv


def _truthy(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")


def _override(cfg: EncoderConfig, opts: dict) -> EncoderConfig:
    bad = [k for k in opts if k not in EncoderConfig.model_fields]
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)}; use {', '.join(LOADER_OPTIONS)} or EncoderConfig fields")
    upd = {k: (tuple(float(x) for x in v.split(",")) if k in ("mean", "std") and isinstance(v, str) else v)
           for k, v in opts.items()}
    try:
        return EncoderConfig.model_validate(cfg.model_dump() | upd)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(x) for x in err.get("loc", ())) or "option"
        raise ValueError(f"option {name}={upd.get(name, '?')!r}: {err.get('msg', 'invalid')}") from None


# ---------------------------------------------------------------------------------------------- tokenizers


def _special_id(folder: Path, tok: Tokenizer, role: str) -> int | None:
    """Id of the ``pad_token`` / ``eos_token`` named in tokenizer_config.json or special_tokens_map.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        v = json_beside(folder / name).get(role)
        v = v.get("content") if isinstance(v, dict) else v
        if isinstance(v, str) and tok.token_to_id(v) is not None:
            return tok.token_to_id(v)
    return None


def load_tokenizer(folder: Path) -> Tokenizer | None:
    """``folder/tokenizer.json`` with its own padding / truncation switched off (``encode_batch`` does both)."""
    if not (folder / "tokenizer.json").is_file():
        return None
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _attach_tokenizer_ids(conv: Converted, folder: Path) -> None:
    """Take pad / eos ids for tokenising from the tokenizer files (pooling keeps the model's own rule)."""
    tok = load_tokenizer(folder)
    if tok is None:
        return
    upd = {}
    eos = _special_id(folder, tok, "eos_token")
    if eos is None:
        eos = next((tok.token_to_id(t) for t in ("<|endoftext|>", "</s>") if tok.token_to_id(t) is not None), None)
    if eos is not None and conv.text_config.pool != "eos":  # eos pooling uses the model config's id
        upd["eos_id"] = eos
    pad = _special_id(folder, tok, "pad_token")
    if pad is not None:
        upd["pad_id"] = pad
    elif conv.text_config.causal and eos is not None:  # CLIP pads with <|endoftext|>; harmless under the causal mask
        upd["pad_id"] = eos
    conv.text_config = conv.text_config.model_copy(update=upd)


# ---------------------------------------------------------------------------------------------- building


class Pretrained(NamedTuple):
    """What ``load_pretrained`` returns, in ``api.load_encoder``'s order."""

    encoder: nn.Module
    spec: InputSpec
    config: EncoderConfig


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, ignore: tuple[str, ...] = ()) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in ignore]
    if missing or unexpected:
        raise ValueError(f"{what}: the converted weights do not fit the network; "
                         f"missing {missing[:8]}, unexpected {unexpected[:8]}")


def build_vision(conv: Converted) -> nn.Module:
    """The vision encoder of a ``Converted`` with its weights, in eval mode."""
    enc = build_encoder(conv.config, conv.spec)
    _load_strict(enc, conv.state, conv.config.source or "encoder")
    return enc.eval()


def load_pretrained(ref: str | Path, **options) -> Pretrained:
    """A public model as a selfsup encoder: ``(encoder, spec, config)``, encoder in eval mode.

    ``encoder.forward_features(x)`` equals the source's final hidden states (after its final
    norm) for the same input tensor ``x = encoders.to_input(encoder, images01)`` (the source's own
    normalisation);
    ``encoder(x)`` gives pooled features. ``spec.image_size`` is the size the source was trained
    at; ``config`` rebuilds the network with ``build_encoder(config, spec)``.
    """
    parsed = parse_ref(ref)
    if parsed.scheme == "selfsup":
        from selfsup.encoders.generalist import load_generalist

        return Pretrained(*load_generalist(parsed.name, **{**parsed.options, **options}))
    conv = read_pretrained(ref, **options)
    return Pretrained(build_vision(conv), conv.spec, conv.config)


@dataclass
class CLIPTowers:
    """A CLIP / SigLIP model as selfsup modules: what ``methods/clip.py`` needs to start from it.

    ``vision`` (our ViT; ``vision(x)`` = pooled features), ``image_projection`` (Linear to the
    joint space; None for SigLIP, whose pooled features are the embedding), ``text`` (our
    ``TextTransformer`` with the projection inside and its tokenizer when the source has a
    tokenizer.json), ``logit_scale`` (log, as stored) and ``logit_bias`` (SigLIP).
    """

    vision: nn.Module
    image_projection: nn.Linear | None
    text: TextTransformer
    logit_scale: float
    logit_bias: float | None
    spec: InputSpec
    vision_config: EncoderConfig
    text_config: TextConfig

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, C, H, W) -> joint-space embeddings (B, E), not L2-normalised."""
        f = self.vision(x)
        return self.image_projection(f) if self.image_projection is not None else f

    def encode_image(self, images01: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> L2-normalised embeddings, with the source's normalisation."""
        x = to_input(self.vision, images01)
        return F.normalize(self.image_features(x), dim=-1)

    def encode_text(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Texts (tokenised with the source's tokenizer) or ids (B, T) -> L2-normalised embeddings."""
        ids = texts if isinstance(texts, torch.Tensor) else self.text.tokenize(texts)
        return F.normalize(self.text(ids), dim=-1)

    def logits(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """L2-normalised image (N, E) and text (M, E) embeddings -> logits (N, M): exp(scale) cos + bias."""
        out = math.exp(self.logit_scale) * img @ txt.T
        return out + self.logit_bias if self.logit_bias is not None else out


def load_clip(ref: str | Path, **options) -> CLIPTowers:
    """Both towers of a CLIP or SigLIP model (``hf:`` CLIPModel / SiglipModel, ``open_clip:``)."""
    conv = read_pretrained(ref, **options)
    if conv.text_config is None:
        raise ValueError(f"{ref}: not an image-text model (no text tower); use load_pretrained")
    vision = build_vision(conv)
    text = build_text(conv.text_config)
    _load_strict(text, conv.text_state, f"{ref} (text)", ignore=("tokenizer_json",))
    tok = load_tokenizer(conv.folder)
    if tok is not None:
        text.set_tokenizer(tok)
    else:
        text.missing_tokenizer_reason = _NO_TOKENIZER.format(what=str(ref), L=conv.text_config.context_length)
    proj = None
    if conv.image_projection is not None:
        w = conv.image_projection["weight"]
        proj = nn.Linear(w.shape[1], w.shape[0], bias="bias" in conv.image_projection)
        _load_strict(proj, conv.image_projection, f"{ref} (image projection)")
    scale = conv.logit_scale if conv.logit_scale is not None else math.log(1 / 0.07)
    return CLIPTowers(vision, proj, text.eval(), scale, conv.logit_bias, conv.spec, conv.config, conv.text_config)


def load_mae_decoder(ref: str | Path, **options) -> MAEDecoder:
    """The MAE decoder of ``hf:`` ViTMAEForPreTraining weights, or of a local facebookresearch MAE
    checkpoint (its ``decoder_*`` names already are ``methods/mae.py``'s; give ``decoder_heads``)."""
    conv = read_pretrained(ref, **{k: v for k, v in options.items() if k != "decoder_heads"})
    if conv.mae_decoder is not None:
        return conv.mae_decoder
    path = resolve(parse_ref(ref))
    state = read_state_dict(path if path.is_file() else weights_in(path, HF_WEIGHTS))
    dec = {k: v for k, v in state.items() if k.startswith(("decoder_", "mask_token"))}
    if not dec:
        raise ValueError(f"{ref}: no MAE decoder weights (Hugging Face ViTMAEForPreTraining or decoder_* keys)")
    width = dec["decoder_embed.weight"].shape[0]
    depth = 1 + max(int(m.group(1)) for k in dec if (m := re.match(r"decoder_blocks\.(\d+)\.", k)))
    heads = int(options.get("decoder_heads", 16))
    return MAEDecoder({"decoder_width": width, "decoder_depth": depth, "decoder_heads": heads}, dec,
                      dec["decoder_blocks.0.mlp.fc1.weight"].shape[0] / width, 1e-6)


__all__ = [
    "ModelRef", "parse_ref", "resolve", "read_state_dict", "read_pretrained", "load_pretrained", "load_clip",
    "load_mae_decoder", "load_tokenizer", "build_vision", "Pretrained", "CLIPTowers", "OPEN_CLIP_HUB", "SCHEMES",
]
