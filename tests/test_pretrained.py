"""Public pretrained models load into selfsup's encoders and compute the source's function.

Hugging Face: a tiny random model of every supported architecture is built from its config class,
saved with ``save_pretrained`` and loaded through ``selfsup.encoders.hub``; our
``forward_features`` must equal the source's final hidden states (after its final norm) within
1e-4, also at another image size where the source interpolates position embeddings. timm and
open_clip: state dicts are written in their names by hand (from the layouts of timm's
``VisionTransformer`` and open_clip's ``CLIP``), from a Hugging Face model whose outputs are the
reference. torchvision / Keras MobileNetV2: a functional reference forward written here, and the
one real checkpoint in ../shared/weights.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from selfsup.data.spec import InputSpec, normalize
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.hub import load_clip, load_mae_decoder, load_pretrained, parse_ref, read_pretrained
from selfsup.encoders.text import build_text

transformers = pytest.importorskip("transformers", reason="transformers (the interop extra) is not installed")

ATOL = 1e-4
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def shared_dir() -> Path:
    """../shared beside the repository; for a git worktree, beside its main checkout; or $SELFSUP_SHARED."""
    if os.environ.get("SELFSUP_SHARED"):
        return Path(os.environ["SELFSUP_SHARED"])
    root = Path(__file__).resolve().parents[1]
    git = root / ".git"
    if git.is_file():  # a worktree: "gitdir: MAIN/.git/worktrees/NAME"
        root = Path(git.read_text().split("gitdir:", 1)[1].strip()).parents[2]
    return root.parent / "shared"


SHARED = shared_dir()
WEIGHTS = SHARED / "weights" / "mobilenetv2_035_imagenet.pt"


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err < atol, f"max abs difference {err:.2e} >= {atol:.0e}"


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter (LayerNorms, layer scales and biases included), so no
    parameter can be silently dropped or swapped without the outputs changing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(math.log(10.0))
            elif name.endswith("logit_bias"):
                p.fill_(-3.0)
            elif p.ndim == 1 and ("norm" in name or "lambda" in name) and name.endswith(("weight", "lambda1")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def roundtrip(encoder, config: EncoderConfig, spec: InputSpec, x: torch.Tensor) -> None:
    """A pure EncoderConfig (through JSON) + the state dict rebuild the same function."""
    cfg = EncoderConfig.model_validate_json(config.model_dump_json())
    rebuilt = build_encoder(cfg, InputSpec(channels=spec.channels, image_size=spec.image_size)).eval()
    rebuilt.load_state_dict(encoder.state_dict())
    close(rebuilt.forward_features(x), encoder.forward_features(x), 1e-6)
    assert (rebuilt.input_mean, rebuilt.input_std) == (encoder.input_mean, encoder.input_std)


# ---------------------------------------------------------------------------------------------- Hugging Face


def test_hf_vit(tmp_path):
    cfg = transformers.ViTConfig(**TINY, intermediate_size=64)
    hf = randomise(transformers.ViTModel(cfg, add_pooling_layer=False))
    hf.save_pretrained(tmp_path)
    enc, spec, ecfg = load_pretrained(f"hf:{tmp_path}")
    assert (spec.image_size, ecfg.mean, ecfg.norm_eps) == (32, (0.5, 0.5, 0.5), 1e-12)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        close(enc.forward_features(x), hf(pixel_values=x).last_hidden_state)
        x48 = torch.randn(2, 3, 48, 40)  # another size and aspect: the position grid is interpolated
        ref = hf(pixel_values=x48, interpolate_pos_encoding=True).last_hidden_state
        close(enc.forward_features(x48), ref)
        roundtrip(enc, ecfg, spec, x)


def test_hf_vit_mae_encoder_and_decoder(tmp_path):
    from selfsup.methods.mae import MAE, MAEConfig

    cfg = transformers.ViTMAEConfig(**TINY, intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                    decoder_num_attention_heads=2, decoder_intermediate_size=64, mask_ratio=0.0,
                                    layer_norm_eps=1e-6, norm_pix_loss=True)
    hf = randomise(transformers.ViTMAEForPreTraining(cfg))
    hf.save_pretrained(tmp_path)
    enc, spec, ecfg = load_pretrained(f"hf:{tmp_path}")
    assert ecfg.pos_embed == "sincos" and ecfg.mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 32, 32)
    noise = torch.arange(16.0).expand(2, -1)  # mask ratio 0 and sorted noise: the patch order is kept
    with torch.no_grad():
        out = hf(pixel_values=x, noise=noise)
        close(enc.forward_features(x), hf.vit(pixel_values=x, noise=noise).last_hidden_state)
        dec = load_mae_decoder(f"hf:{tmp_path}")
        assert dec.config == {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2, "norm_pix_loss": True,
                              "mask_ratio": 0.0}
        mae = MAE(MAEConfig(**dec.config), ecfg, spec).eval()
        mae.encoder.load_state_dict(enc.state_dict())
        missing, unexpected = mae.load_state_dict(dec.state, strict=False)
        assert not unexpected and all(k.startswith("encoder.") for k in missing)
        restore = torch.arange(16).expand(2, -1)
        close(mae.decode(enc.forward_features(x), restore), out.logits)


@pytest.mark.parametrize("swiglu", [False, True])
def test_hf_dinov2(tmp_path, swiglu):
    cfg = transformers.Dinov2Config(**TINY, mlp_ratio=4, use_swiglu_ffn=swiglu)
    hf = randomise(transformers.Dinov2Model(cfg))
    hf.save_pretrained(tmp_path)
    enc, spec, ecfg = load_pretrained(f"hf:{tmp_path}")
    assert ecfg.init_values is not None and (ecfg.mlp_layer == "swiglu") == swiglu
    with torch.no_grad():
        for size in ((32, 32), (56, 40)):  # Dinov2 interpolates whenever the size differs
            x = torch.randn(2, 3, *size)
            close(enc.forward_features(x), hf(pixel_values=x).last_hidden_state)
            assert torch.equal(enc(x), enc.forward_features(x)[:, 0])  # pool token = HF's pooler (normed CLS)
        roundtrip(enc, ecfg, spec, x)


def test_hf_dinov2_with_registers(tmp_path):
    cfg = transformers.Dinov2WithRegistersConfig(**TINY, num_register_tokens=3)
    hf = randomise(transformers.Dinov2WithRegistersModel(cfg))
    hf.save_pretrained(tmp_path)
    enc, spec, ecfg = load_pretrained(f"hf:{tmp_path}")
    assert (ecfg.reg_tokens, ecfg.no_embed_class, enc.num_prefix_tokens) == (3, True, 4)
    with torch.no_grad():
        for size in ((32, 32), (48, 48), (24, 16)):  # up and down: the antialiased resize
            x = torch.randn(2, 3, *size)
            close(enc.forward_features(x), hf(pixel_values=x).last_hidden_state)
        # the registers are prefix tokens: forward_intermediates returns only the patches
        (patches,) = enc.forward_intermediates(x, [-1], output_fmt="NLC", intermediates_only=True)
        assert patches.shape == (2, 6, 32)
        roundtrip(enc, ecfg, spec, x)


def clip_tokenizer(folder: Path, vocab_size: int) -> None:
    """A CLIP-style tokenizer.json (byte-level BPE, <|startoftext|> ... <|endoftext|>) plus the
    special-token files a Hugging Face CLIP folder has; the vocabulary fills exactly vocab_size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["a photo of a cat", "a photo of a dog", "two dogs on the grass"] * 20, trainer)
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return tok


def tiny_clip(siglip: bool = False, eos: int = 2):
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=300,
                max_position_embeddings=16, eos_token_id=eos)
    vision = dict(**TINY, intermediate_size=64)
    if siglip:
        return randomise(transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)))
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    return randomise(transformers.CLIPModel(cfg))


def check_towers(hf, towers, x, ids, siglip: bool) -> None:
    with torch.no_grad():
        vis = hf.vision_model(pixel_values=x)
        ours = towers.vision.forward_features(x)
        # CLIP's last_hidden_state is before post_layernorm; SigLIP's already after it
        ref = vis.last_hidden_state if siglip else hf.vision_model.post_layernorm(vis.last_hidden_state)
        close(ours, ref)
        close(towers.vision(x), vis.pooler_output)
        close(towers.image_features(x), hf.get_image_features(pixel_values=x).pooler_output)
        txt = hf.text_model(input_ids=ids)
        close(towers.text.forward_features(ids), txt.last_hidden_state)
        close(towers.text(ids), hf.get_text_features(input_ids=ids).pooler_output)
        out = hf(input_ids=ids, pixel_values=x)
        img_e, txt_e = F.normalize(towers.image_features(x), dim=-1), F.normalize(towers.text(ids), dim=-1)
        close(towers.logits(img_e, txt_e), out.logits_per_image, 1e-3)


@pytest.mark.parametrize("eos", [2, 299])  # 2: older configs (pool at the largest id); else the first eos
def test_hf_clip_both_towers_and_tokenizer(tmp_path, eos):
    hf = tiny_clip(eos=eos)
    hf.save_pretrained(tmp_path)
    tok = clip_tokenizer(tmp_path, 300)
    towers = load_clip(f"hf:{tmp_path}")
    cfg = towers.vision_config
    assert (cfg.pre_norm, cfg.patch_bias, cfg.act, cfg.norm_eps, cfg.mean[0]) == (True, False, "quick_gelu", 1e-5,
                                                                                  0.48145466)
    assert towers.text_config.pool == ("argmax" if eos == 2 else "eos") and towers.logit_bias is None
    texts = ["a photo of a cat", "two dogs on the grass, a photo of a dog"]
    ids = towers.text.tokenize(texts)
    eot = tok.token_to_id("<|endoftext|>")
    assert ids.shape == (2, 16) and ids[0, 0] == tok.token_to_id("<|startoftext|>")
    assert ids[0].tolist()[: len(tok.encode(texts[0]).ids) + 1] == tok.encode(texts[0]).ids + [eot]  # padded with eot
    assert ids[1, -1] == eot  # truncated, <|endoftext|> kept last
    if eos != 2:  # the real eos id in the model config: pooled at the first <|endoftext|>
        hf.config.text_config.eos_token_id = eot
        hf.text_model.eos_token_id = eot
        hf.save_pretrained(tmp_path)
        towers = load_clip(f"hf:{tmp_path}")
    x = torch.randn(2, 3, 32, 32)
    check_towers(hf, towers, x, ids, siglip=False)
    spec = towers.spec
    assert spec.modality == "image_text" and spec.image_size == 32
    rebuilt = build_text(towers.text_config)
    rebuilt.load_state_dict(towers.text.state_dict())  # the tokenizer travels in the state dict
    assert torch.equal(rebuilt.tokenize(texts), ids)


def test_hf_siglip_both_towers_without_tokenizer(tmp_path):
    hf = tiny_clip(siglip=True)
    hf.save_pretrained(tmp_path)
    towers = load_clip(f"hf:{tmp_path}")
    cfg = towers.vision_config
    assert (cfg.class_token, cfg.pool, cfg.act, cfg.mean) == (False, "map", "gelu_tanh", (0.5, 0.5, 0.5))
    assert towers.image_projection is None and towers.logit_bias == pytest.approx(-3.0)
    x = torch.randn(2, 3, 32, 32)
    ids = torch.randint(2, 300, (2, 16))
    ids[0, 9:] = 1  # padded with </s> = 1, attended to (SigLIP trains with padding="max_length")
    check_towers(hf, towers, x, ids, siglip=True)
    with pytest.raises(RuntimeError, match="no tokenizer.json"):
        towers.text.tokenize(["a cat"])
    with torch.no_grad():
        x40 = torch.randn(1, 3, 40, 40)
        ref = hf.vision_model(pixel_values=x40, interpolate_pos_encoding=True).last_hidden_state
        close(towers.vision.forward_features(x40), ref)


# ---------------------------------------------------------------------------------------------- references


def test_parse_ref():
    r = parse_ref("open_clip:ViT-B-32/laion2b_s34b_b79k?quick_gelu=1")
    assert (r.scheme, r.name, r.options) == ("open_clip", "ViT-B-32/laion2b_s34b_b79k", {"quick_gelu": "1"})
    assert parse_ref("hf:facebook/dinov2-small").scheme == "hf"
    assert parse_ref("timm:vit_small_patch16_224.dino").name == "vit_small_patch16_224.dino"
    r = parse_ref("/data/w/mobilenet.pt?origin=keras&width_mult=0.35")
    assert (r.scheme, r.name, r.options["origin"]) == (None, "/data/w/mobilenet.pt", "keras")
    with pytest.raises(ValueError, match="unknown model scheme"):
        parse_ref("hug:facebook/dinov2-small")
    with pytest.raises(FileNotFoundError, match="need a scheme"):
        read_pretrained("facebook/dinov2-small")


# ---------------------------------------------------------------------------------------------- timm
# Hand-written translations of Hugging Face files into timm's and open_clip's names, from their
# layouts: timm VisionTransformer (cls_token, reg_token, pos_embed, patch_embed.proj, norm_pre,
# blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm,
# attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}, head) and open_clip CLIP (visual.conv1,
# visual.class_embedding (D,), visual.positional_embedding (T, D), visual.ln_pre,
# visual.transformer.resblocks.i.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc,
# mlp.c_proj}, visual.ln_post, visual.proj (D, E) used as x @ proj; token_embedding,
# positional_embedding (L, D), transformer.resblocks.*, ln_final, text_projection (D, E),
# logit_scale [, logit_bias]; CustomTextCLIP puts the text tower under text. and a timm vision
# tower under visual.trunk.). Checked once against the real libraries (timm 1.0.x,
# open_clip_torch 3.x in /tmp/peers): see the comment at the end of this file.

WIDE = dict(TINY, hidden_size=128)  # head width 64: what timm / open_clip infer when no config says otherwise


def hf_file(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def qkv(sd: dict, p: str, q="q_proj", k="k_proj", v="v_proj") -> dict[str, torch.Tensor]:
    return {kind: torch.cat([sd[f"{p}{q}.{kind}"], sd[f"{p}{k}.{kind}"], sd[f"{p}{v}.{kind}"]])
            for kind in ("weight", "bias")}


def hf_clip_vision_as_timm(sd: dict, siglip: bool) -> dict[str, torch.Tensor]:
    v = {k.removeprefix("vision_model."): t for k, t in sd.items() if k.startswith("vision_model.")}
    out = {"pos_embed": v["embeddings.position_embedding.weight"][None],
           "patch_embed.proj.weight": v["embeddings.patch_embedding.weight"]}
    if siglip:
        out["patch_embed.proj.bias"] = v["embeddings.patch_embedding.bias"]
        D = out["pos_embed"].shape[-1]
        w, b = v["head.attention.in_proj_weight"], v["head.attention.in_proj_bias"]
        out |= {"attn_pool.latent": v["head.probe"], "attn_pool.q.weight": w[:D], "attn_pool.q.bias": b[:D],
                "attn_pool.kv.weight": w[D:], "attn_pool.kv.bias": b[D:]}
        for a, b_ in (("head.attention.out_proj", "attn_pool.proj"), ("head.layernorm", "attn_pool.norm"),
                      ("head.mlp.fc1", "attn_pool.mlp.fc1"), ("head.mlp.fc2", "attn_pool.mlp.fc2")):
            out |= {f"{b_}.{kind}": v[f"{a}.{kind}"] for kind in ("weight", "bias")}
    else:
        out["cls_token"] = v["embeddings.class_embedding"].reshape(1, 1, -1)
        out |= {f"norm_pre.{kind}": v[f"pre_layrnorm.{kind}"] for kind in ("weight", "bias")}
    out |= {f"norm.{kind}": v[f"post_layernorm.{kind}"] for kind in ("weight", "bias")}
    for i in range(2):
        p, b = f"encoder.layers.{i}.", f"blocks.{i}."
        out |= {f"{b}attn.qkv.{kind}": t for kind, t in qkv(v, p + "self_attn.").items()}
        for a, c in (("layer_norm1", "norm1"), ("self_attn.out_proj", "attn.proj"), ("layer_norm2", "norm2"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out |= {f"{b}{c}.{kind}": v[f"{p}{a}.{kind}"] for kind in ("weight", "bias")}
    return out


def test_timm_folder_siglip_map_pool(tmp_path):
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    hf = randomise(transformers.SiglipModel(transformers.SiglipConfig(
        text_config=text, vision_config=dict(WIDE, intermediate_size=256))))
    hf.save_pretrained(tmp_path / "hf")
    folder = tmp_path / "timm"
    folder.mkdir()
    save_file(hf_clip_vision_as_timm(hf_file(tmp_path / "hf"), siglip=True), str(folder / "model.safetensors"))
    # timm's so400m patch16 SigLIP definitions use gelu_tanh as Hugging Face does (the base ones: exact GELU)
    (folder / "config.json").write_text(json.dumps({
        "architecture": "vit_so400m_patch16_siglip_256", "num_classes": 0, "global_pool": "map",
        "pretrained_cfg": {"tag": "webli", "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}}))
    enc, spec, cfg = load_pretrained(f"timm:{folder}")
    assert (cfg.heads, cfg.act, cfg.pool, cfg.class_token, cfg.norm_eps) == (2, "gelu_tanh", "map", False, 1e-6)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf.vision_model(pixel_values=x)
        close(enc.forward_features(x), out.last_hidden_state)
        close(enc(x), out.pooler_output)


def test_timm_folder_clip_quickgelu(tmp_path):
    hf = randomise(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**WIDE, intermediate_size=512)))
    hf.save_pretrained(tmp_path / "hf")
    folder = tmp_path / "timm"
    folder.mkdir()
    file = hf_file(tmp_path / "hf")  # transformers 5 writes a vision-only model without "vision_model."
    sd = hf_clip_vision_as_timm({k if k.startswith("vision_model.") else f"vision_model.{k}": t
                                 for k, t in file.items()}, siglip=False)
    sd |= {"head.weight": torch.randn(24, 128), "head.bias": torch.zeros(24)}  # timm keeps CLIP's projection as head
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_clip_quickgelu_224",
                                                    "pretrained_cfg": {"input_size": [3, 32, 32]}}))
    enc, spec, cfg = load_pretrained(f"timm:{folder}")
    assert (cfg.act, cfg.norm_eps, cfg.pre_norm, cfg.patch_bias) == ("quick_gelu", 1e-5, True, False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf(pixel_values=x)
        close(enc.forward_features(x), hf.post_layernorm(out.last_hidden_state))
        close(enc(x), out.pooler_output)


def test_facebookresearch_dinov2_registers_swiglu_file(tmp_path):
    """The original DINOv2 layout (timm-like, with register_tokens, mlp.w12 / w3, mask_token) as a .pth file."""
    cfg = transformers.Dinov2WithRegistersConfig(**TINY, num_register_tokens=2, use_swiglu_ffn=True)
    hf = randomise(transformers.Dinov2WithRegistersModel(cfg))
    hf.save_pretrained(tmp_path)
    e = hf_file(tmp_path)
    sd = {"cls_token": e["embeddings.cls_token"], "pos_embed": e["embeddings.position_embeddings"],
          "register_tokens": e["embeddings.register_tokens"], "mask_token": e["embeddings.mask_token"],
          "patch_embed.proj.weight": e["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": e["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": e["layernorm.weight"], "norm.bias": e["layernorm.bias"]}
    for i in range(2):
        p, b = f"encoder.layer.{i}.", f"blocks.{i}."
        sd |= {f"{b}attn.qkv.{k}": t for k, t in qkv(e, p + "attention.attention.", "query", "key", "value").items()}
        sd |= {f"{b}ls1.gamma": e[p + "layer_scale1.lambda1"], f"{b}ls2.gamma": e[p + "layer_scale2.lambda1"]}
        for a, c in (("norm1", "norm1"), ("attention.output.dense", "attn.proj"), ("norm2", "norm2"),
                     ("mlp.weights_in", "mlp.w12"), ("mlp.weights_out", "mlp.w3")):
            sd |= {f"{b}{c}.{kind}": e[f"{p}{a}.{kind}"] for kind in ("weight", "bias")}
    torch.save({"model": sd}, tmp_path / "dinov2_reg.pth")
    enc, spec, ecfg = load_pretrained(f"{tmp_path / 'dinov2_reg.pth'}?heads=2&pos_antialias=true")
    assert (ecfg.mlp_layer, ecfg.act, ecfg.reg_tokens, ecfg.no_embed_class) == ("swiglu", "silu", 2, True)
    with torch.no_grad():
        for size in ((32, 32), (48, 48)):
            x = torch.randn(2, 3, *size)
            close(enc.forward_features(x), hf(pixel_values=x).last_hidden_state)


# ---------------------------------------------------------------------------------------------- open_clip


def hf_clip_as_open_clip(sd: dict) -> dict[str, torch.Tensor]:
    out = {"logit_scale": sd["logit_scale"]}
    for tower, dst in (("vision_model.", "visual.transformer.resblocks."), ("text_model.", "transformer.resblocks.")):
        for i in range(2):
            p, b = f"{tower}encoder.layers.{i}.", f"{dst}{i}."
            both = qkv(sd, p + "self_attn.")
            out |= {f"{b}attn.in_proj_weight": both["weight"], f"{b}attn.in_proj_bias": both["bias"]}
            for a, c in (("layer_norm1", "ln_1"), ("self_attn.out_proj", "attn.out_proj"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out |= {f"{b}{c}.{kind}": sd[f"{p}{a}.{kind}"] for kind in ("weight", "bias")}
    out |= {"visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
            "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
            "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
            "visual.proj": sd["visual_projection.weight"].T.contiguous(),
            "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
            "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
            "text_projection": sd["text_projection.weight"].T.contiguous()}
    for a, c in (("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post"),
                 ("text_model.final_layer_norm", "ln_final")):
        out |= {f"{c}.{kind}": sd[f"{a}.{kind}"] for kind in ("weight", "bias")}
    return out


def test_open_clip_native_clip(tmp_path):
    text = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=300,
                max_position_embeddings=16, eos_token_id=2)  # eos 2: HF pools at the largest id, as open_clip
    hf = randomise(transformers.CLIPModel(transformers.CLIPConfig(
        text_config=text, vision_config=dict(WIDE, intermediate_size=512), projection_dim=24)))
    hf.save_pretrained(tmp_path / "hf")
    folder = tmp_path / "oc"
    folder.mkdir()
    save_file(hf_clip_as_open_clip(hf_file(tmp_path / "hf")), str(folder / "open_clip_model.safetensors"))
    model_cfg = {"embed_dim": 24, "quick_gelu": True,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
                 "text_cfg": {"context_length": 16, "vocab_size": 300, "width": 128, "heads": 2, "layers": 2}}
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}}))
    towers = load_clip(f"open_clip:{folder}")
    assert towers.vision_config.mean == (0.4, 0.4, 0.4) and towers.text_config.pool == "argmax"
    ids = torch.randint(1, 298, (2, 16))
    ids[:, 0], ids[0, 7], ids[1, 15] = 298, 299, 299  # <sot> ... <eot> (the largest id), then padding 0
    ids[0, 8:] = 0
    check_towers(hf, towers, torch.randn(2, 3, 32, 32), ids, siglip=False)
    # without open_clip_config.json the shapes decide; the activation must then be given
    (folder / "open_clip_config.json").unlink()
    again = load_clip(f"open_clip:{folder}?quick_gelu=1")
    assert again.vision_config.model_dump(exclude={"mean", "std"}) == towers.vision_config.model_dump(
        exclude={"mean", "std"})


def test_open_clip_siglip_timm_trunk(tmp_path):
    text = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=300,
                max_position_embeddings=16, hidden_act="gelu")  # open_clip's text tower uses exact GELU
    hf = randomise(transformers.SiglipModel(transformers.SiglipConfig(
        text_config=text, vision_config=dict(WIDE, intermediate_size=512))))
    hf.save_pretrained(tmp_path / "hf")
    sd = hf_file(tmp_path / "hf")
    oc = {f"visual.trunk.{k}": t for k, t in hf_clip_vision_as_timm(sd, siglip=True).items()}
    oc |= {"logit_scale": sd["logit_scale"], "logit_bias": sd["logit_bias"]}
    for k, t in hf_clip_as_open_clip({**sd, "visual_projection.weight": torch.zeros(1, 1),
                                      "text_projection.weight": torch.zeros(1, 1),
                                      "vision_model.pre_layrnorm.weight": 0, "vision_model.pre_layrnorm.bias": 0,
                                      "vision_model.embeddings.class_embedding": 0}).items():
        if not k.startswith(("visual.", "logit_", "text_projection")):
            oc[f"text.{k}"] = t
    oc["text.text_projection.weight"] = sd["text_model.head.weight"]
    oc["text.text_projection.bias"] = sd["text_model.head.bias"]
    folder = tmp_path / "oc"
    folder.mkdir()
    save_file(oc, str(folder / "open_clip_model.safetensors"))
    model_cfg = {"embed_dim": 128, "init_logit_bias": -10, "custom_text": True,
                 "vision_cfg": {"image_size": 32, "timm_model_name": "vit_so400m_patch16_siglip_256",
                                "timm_pool": "map", "timm_proj": "none"},
                 "text_cfg": {"context_length": 16, "vocab_size": 300, "width": 128, "heads": 2, "layers": 2,
                              "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
                              "norm_kwargs": {"eps": 1e-6}}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    towers = load_clip(f"open_clip:{folder}")
    assert towers.image_projection is None and towers.logit_bias == pytest.approx(-3.0)
    ids = torch.randint(2, 300, (2, 16))
    check_towers(hf, towers, torch.randn(2, 3, 32, 32), ids, siglip=True)


# ---------------------------------------------------------------------------------------------- torchvision


def make_divisible(v: float) -> int:
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


def torchvision_mobilenet_v2(width: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with torchvision.models.mobilenet_v2(width_mult=width)'s keys and shapes
    (features.0 = conv + BN; blocks features.1..17 = [conv.0 expand (Conv+BN+ReLU6) unless t=1],
    depthwise (Conv+BN+ReLU6), conv.k 1x1 projection, conv.k+1 BN; features.18 = 1x1 conv + BN;
    classifier.1), BN statistics included."""
    g = torch.Generator().manual_seed(seed)

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5

    def bn(name, c):
        sd.update({f"{name}.weight": 1 + 0.1 * torch.randn(c, generator=g),
                   f"{name}.bias": 0.1 * torch.randn(c, generator=g),
                   f"{name}.running_mean": 0.1 * torch.randn(c, generator=g),
                   f"{name}.running_var": 0.5 + torch.rand(c, generator=g),
                   f"{name}.num_batches_tracked": torch.tensor(0)})

    sd: dict[str, torch.Tensor] = {}
    cin = make_divisible(32 * width)
    conv("features.0.0", cin, 3, 3)
    bn("features.0.1", cin)
    i = 1
    for t, c, n, _ in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        cout = make_divisible(c * width)
        for _ in range(n):
            h, p, j = cin * t, f"features.{i}.conv.", 0
            if t != 1:
                conv(f"{p}0.0", h, cin, 1)
                bn(f"{p}0.1", h)
                j = 1
            conv(f"{p}{j}.0", h, 1, 3)
            bn(f"{p}{j}.1", h)
            conv(f"{p}{j + 1}", cout, h, 1)
            bn(f"{p}{j + 2}", cout)
            cin, i = cout, i + 1
    last = make_divisible(1280 * max(1.0, width))
    conv("features.18.0", last, cin, 1)
    bn("features.18.1", last)
    sd["classifier.1.weight"], sd["classifier.1.bias"] = torch.randn(10, last, generator=g), torch.zeros(10)
    return sd


def reference_mobilenet_v2(sd: dict, x: torch.Tensor, eps: float, tf: bool) -> torch.Tensor:
    """MobileNetV2 features, written functionally from the state dict. ``tf``: stride-2 convolutions
    pad (0, 1, 0, 1) on even inputs, padding 0 (TensorFlow "same"); else PyTorch's symmetric padding."""

    def conv_bn(x, name, bn_name, stride=1, groups=1, relu=True):
        w = sd[name + ".weight"]
        k = w.shape[-1]
        if tf and stride == 2:
            x, pad = F.pad(x, (0, 1, 0, 1)), 0
        else:
            pad = k // 2
        x = F.conv2d(x, w, None, stride, pad, 1, groups)
        x = F.batch_norm(x, sd[bn_name + ".running_mean"], sd[bn_name + ".running_var"], sd[bn_name + ".weight"],
                         sd[bn_name + ".bias"], False, 0.0, eps)
        return F.relu6(x) if relu else x

    x = conv_bn(x, "features.0.0", "features.0.1", stride=2)
    strides = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    for i, s in enumerate(strides, start=1):
        p = f"features.{i}.conv."
        j, y = 0, x
        if f"{p}0.0.weight" in sd and sd[f"{p}0.0.weight"].shape[-1] == 1:
            y, j = conv_bn(y, f"{p}0.0", f"{p}0.1"), 1
        y = conv_bn(y, f"{p}{j}.0", f"{p}{j}.1", stride=s, groups=y.shape[1])
        y = conv_bn(y, f"{p}{j + 1}", f"{p}{j + 2}", relu=False)
        x = x + y if s == 1 and x.shape == y.shape else y
    return conv_bn(x, "features.18.0", "features.18.1")


@pytest.mark.parametrize("width,origin", [(0.5, "torchvision"), (0.75, "keras")])
def test_torchvision_mobilenet_v2(tmp_path, width, origin):
    sd = torchvision_mobilenet_v2(width)
    path = tmp_path / "mnv2.pth"
    torch.save(sd, path)
    ref = f"torchvision:{path}" + ("?origin=keras" if origin == "keras" else "")
    enc, spec, cfg = load_pretrained(ref)
    keras = origin == "keras"
    assert (cfg.name, cfg.width_mult, cfg.tf_padding, cfg.bn_eps) == ("mobilenetv2", width, keras,
                                                                       1e-3 if keras else None)
    assert cfg.mean == ((0.5,) * 3 if keras else (0.485, 0.456, 0.406))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        close(enc.forward_features(x), reference_mobilenet_v2(sd, x, 1e-3 if keras else 1e-5, tf=keras))
        roundtrip_cnn = build_encoder(EncoderConfig.model_validate_json(cfg.model_dump_json()), spec).eval()
        roundtrip_cnn.load_state_dict(enc.state_dict())
        assert torch.equal(roundtrip_cnn(x), enc(x))
    # the same settings from a sidecar JSON next to the weights
    path.with_suffix(".json").write_text(json.dumps({"origin": origin}))
    assert load_pretrained(path).config == cfg.model_copy(update={"source": str(path)})


def test_torchvision_resnet(tmp_path):
    from selfsup.encoders import resnet

    for name in ("resnet18", "resnet50"):
        src = resnet.build(name, num_classes=7).eval()
        torch.save(src.state_dict(), tmp_path / f"{name}.pth")
        enc, spec, cfg = load_pretrained(f"torchvision:{tmp_path / name}.pth")
        assert (cfg.name, cfg.cifar_stem) == (name, False)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(enc(x), src.forward_head(src.forward_features(x), pre_logits=True))


@pytest.fixture
def keras_mobilenet() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"the real Keras MobileNetV2 checkpoint is not at {WEIGHTS} (../shared/weights beside the repo)")
    return WEIGHTS


def test_real_keras_mobilenet_v2_matches_reference(keras_mobilenet):
    enc, spec, cfg = load_pretrained(f"torchvision:{keras_mobilenet}?origin=keras")
    assert (cfg.width_mult, cfg.bn_eps, cfg.tf_padding, enc.num_features) == (0.35, 1e-3, True, 1280)
    sd = torch.load(keras_mobilenet, weights_only=True)
    x = normalize(torch.rand(1, 3, 96, 96), cfg.mean, cfg.std)  # = x / 127.5 - 1 for uint8 images
    with torch.no_grad():
        ours = enc.forward_features(x)
        close(ours, reference_mobilenet_v2(sd, x, 1e-3, tf=True), 1e-3)
        # PyTorch's symmetric padding is a different function on these weights
        wrong = load_pretrained(f"torchvision:{keras_mobilenet}?tf_padding=false&bn_eps=1e-3").encoder
        assert (wrong.forward_features(x) - ours).abs().max() > 0.1


def cifar10_test_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (float in [0, 1]) and labels of the CIFAR-10 test shard in ../shared/data."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    shard = SHARED / "data" / "cifar10" / "test-000000.tar.gz"
    if not shard.is_file():
        pytest.skip(f"CIFAR-10 test shard not found at {shard} (../shared/data beside the repo)")
    images, labels = {}, {}
    with tarfile.open(shard) as tf:
        for m in tf:
            key, ext = m.name.rsplit(".", 1)
            data = tf.extractfile(m).read()
            if ext == "jpg":
                images[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            elif ext == "cls":
                labels[key] = int(data)
            keys = [k for k in labels if k in images]
            if len(keys) >= n:
                break
    x = torch.tensor(np.stack([images[k] for k in keys[:n]])).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor([labels[k] for k in keys[:n]])


def test_real_keras_mobilenet_v2_features_beat_random(keras_mobilenet):
    """5-NN accuracy (leave-one-out) on 300 CIFAR-10 test images at 128 px: the ImageNet weights with
    Keras' conventions must be far ahead of the same network randomly initialised, and ahead of the
    same weights run with torchvision's conventions (eps 1e-5, symmetric padding, ImageNet mean/std).
    Measured: 0.53 vs 0.20 (random) vs 0.34 (torchvision conventions)."""
    x, y = cifar10_test_images(300)
    images = F.interpolate(x, size=128, mode="bilinear", align_corners=False)
    enc, spec, cfg = load_pretrained(f"torchvision:{keras_mobilenet}?origin=keras")
    wrong = load_pretrained(f"torchvision:{keras_mobilenet}").encoder
    torch.manual_seed(0)
    scratch = build_encoder(cfg, spec).eval()

    def knn(model) -> float:
        with torch.no_grad():
            f = F.normalize(model(normalize(images, model.input_mean, model.input_std)), dim=1)
        sim = f @ f.T - 2 * torch.eye(len(f))
        votes = y[sim.topk(5, dim=1).indices]
        pred = torch.stack([torch.bincount(v, minlength=10).argmax() for v in votes])
        return (pred == y).float().mean().item()

    acc, acc_random, acc_wrong = knn(enc), knn(scratch), knn(wrong)
    assert acc > acc_random + 0.2 and acc > acc_wrong + 0.1, (acc, acc_random, acc_wrong)


# Checked once against the real libraries (2026-11-29, /tmp/peers: timm 1.0.31, open_clip_torch 3.3.0,
# torch 2.13 CPU): tiny random models (width 128, depth 2, 32 px, patch 8) created with
# timm.create_model(NAME, img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=0)
# and their state_dict() saved as timm Hub folders loaded strictly into our ViT under timm:FOLDER?heads=2;
# max |forward_features - timm| / |pooled - timm|: vit_small_patch16_224.dino 1.1e-5 / 8.0e-6,
# vit_small_patch14_reg4_dinov2 7.5e-6 / 2.4e-6, vit_giant_patch14_dinov2 (SwiGLU) 3.2e-5 / 1.9e-5,
# vit_base_patch16_clip_quickgelu_224 9.2e-6 / 4.4e-6, vit_base_patch16_clip_224 1.1e-5 / 6.0e-6,
# vit_base_patch16_siglip_224 (map, GELU) 7.7e-6 / 3.6e-5, vit_so400m_patch16_siglip_256 (map,
# tanh-GELU) 7.8e-6 / 2.8e-5, vit_base_patch16_224 with global_pool=avg (fc_norm; un-normed tokens
# up to 56) 1.8e-4 (3e-6 relative) / 3.1e-6, resnet50 0.0. open_clip: open_clip.model.CLIP(24,
# vision 128x2 p8, text 128x2, quick_gelu=True) encode_image 5.7e-6, encode_text 1.9e-6;
# CustomTextCLIP with a timm vit_base_patch16_siglip_224 trunk (map pool) and a SigLIP-style text
# tower (no causal mask, last-token pool, projection bias) encode_image 3.6e-5, encode_text 5.0e-6.
