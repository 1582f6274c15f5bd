import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.vit import sincos_pos_embed, vit


def timm_vit_tiny_patch16_224_layout(depth: int = 12, dim: int = 192, classes: int = 1000) -> dict:
    """Parameter names and shapes of timm's vit_tiny_patch16_224, written out by hand."""
    layout = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 197, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        layout |= {
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
            b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,),
        }
    layout |= {"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (classes, dim), "head.bias": (classes,)}
    return layout


def test_state_dict_matches_timm_layout():
    model = vit("tiny", img_size=224, patch_size=16, in_chans=3, num_classes=1000, pool="token")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == timm_vit_tiny_patch16_224_layout()


def test_timm_state_dict_loads_and_runs():
    layout = timm_vit_tiny_patch16_224_layout(depth=2, dim=192, classes=5)
    sd = {k: torch.randn(s) * 0.02 for k, s in layout.items()}
    model = vit("tiny", depth=2, img_size=224, patch_size=16, num_classes=5, pool="token")
    model.load_state_dict(sd, strict=True)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)


@pytest.mark.parametrize("pool,width", [("token", 64), ("avg", 64), ("token+avg", 128)])
def test_shapes_and_pooling(pool, width):
    model = vit("custom", width=64, depth=2, heads=4, img_size=32, patch_size=4, in_chans=1, pool=pool)
    x = torch.randn(3, 1, 32, 32)
    assert model.forward_features(x).shape == (3, 1 + 64, 64)
    assert model(x).shape == (3, width) and model.num_features == width


def test_visible_subset_equals_running_on_gathered_tokens():
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=2, heads=2, img_size=16, patch_size=4, in_chans=3).eval()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 9], [15, 2, 7]])
    out = model.forward_features(x, keep=keep)
    tokens = model.embed_patches(x)
    manual = torch.stack([tokens[i, keep[i]] for i in range(2)])
    assert out.shape == (2, 4, 32)
    torch.testing.assert_close(out, model.forward_tokens(manual))


def test_sdpa_path_equals_explicit_attention():
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=2, heads=4, img_size=16, patch_size=4, in_chans=3).eval()
    x = torch.randn(2, 3, 16, 16)
    t = model.forward_tokens(model.embed_patches(x))
    # attention_maps runs the explicit softmax path; rebuild the tokens from it
    seq = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1), model.embed_patches(x)], 1)
    for block in model.blocks:
        seq, attn = block(seq, return_attention=True)
        torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))
    torch.testing.assert_close(model.norm(seq), t, atol=1e-5, rtol=1e-5)


def test_other_image_size_interpolates_position_embedding():
    model = vit("custom", width=32, depth=1, heads=2, img_size=16, patch_size=4, in_chans=1)
    assert model.forward_features(torch.randn(1, 1, 24, 24)).shape == (1, 1 + 36, 32)
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 1, 18, 18))


def test_sincos_embedding_is_distinct_per_position():
    emb = sincos_pos_embed(32, (4, 4), cls_token=False)[0]
    d = torch.cdist(emb, emb) + torch.eye(16) * 10
    assert d.min() > 0.1


def test_build_encoder_from_config():
    enc = build_encoder(EncoderConfig(size="custom", width=48, depth=1, heads=3, patch_size=2),
                        InputSpec(channels=1, image_size=8))
    assert enc(torch.randn(2, 1, 8, 8)).shape == (2, 48)
    with pytest.raises(ValueError, match="unknown ViT size"):
        build_encoder(EncoderConfig(size="huge"), InputSpec())


def test_forward_intermediates_equals_walking_the_blocks():
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=3, heads=2, img_size=16, patch_size=4, in_chans=3).eval()
    x = torch.randn(2, 3, 16, 16)
    t = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1), model.embed_patches(x)], 1)
    manual = []
    for block in model.blocks:
        t = block(t)
        manual.append(t)
    final, inter = model.forward_intermediates(x, [0, -1], output_fmt="NLC", return_prefix_tokens=True)
    torch.testing.assert_close(final, model.forward_features(x))
    for (patches, prefix), ref in zip(inter, (manual[0], manual[2]), strict=True):
        torch.testing.assert_close(patches, ref[:, 1:])
        torch.testing.assert_close(prefix, ref[:, :1])
    (nchw,) = model.forward_intermediates(x, 1, norm=True, intermediates_only=True)
    torch.testing.assert_close(nchw, model.forward_features(x)[:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2))
    (nhwc,) = model.forward_intermediates(x, [1], output_fmt="NHWC", intermediates_only=True)
    assert nhwc.shape == (2, 4, 4, 32)
    with pytest.raises(ValueError, match="not blocks"):
        model.forward_intermediates(x, [3])


@pytest.mark.parametrize("opts", [
    dict(reg_tokens=2, no_embed_class=True, init_values=1e-5),
    dict(class_token=False, pool="map", act_layer="gelu_tanh"),
    dict(pre_norm=True, patch_bias=False, act_layer="quick_gelu", norm_eps=1e-5),
    dict(pool="avg", fc_norm=True, mlp_layer="swiglu", act_layer="silu"),
])
def test_public_model_options_shapes_and_names(opts):
    model = vit("custom", width=32, depth=2, heads=2, img_size=16, patch_size=4, in_chans=3, **opts).eval()
    x = torch.randn(2, 3, 24, 16)  # another size: the grid is interpolated, prefix rows untouched
    P = model.num_prefix_tokens
    assert model.forward_features(x).shape == (2, P + 24, 32) and model(x).shape == (2, 32)
    names = set(model.state_dict())
    assert ("reg_token" in names) == bool(opts.get("reg_tokens"))
    assert ("cls_token" in names) == opts.get("class_token", True)
    assert ("blocks.0.ls1.gamma" in names) == ("init_values" in opts)
    assert ("attn_pool.latent" in names) == (opts.get("pool") == "map")
    assert ("norm_pre.weight" in names) == opts.get("pre_norm", False)
    assert ("fc_norm.weight" in names) != ("norm.weight" in names)
    assert model.pos_embed.shape[1] == (0 if opts.get("no_embed_class") else P) + 16
    assert len(model.attention_maps(x)) == 2


def test_normalize_per_channel_and_default_unchanged():
    from selfsup.data.spec import IMAGE_MEAN, IMAGE_STD, denormalize, normalize

    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(normalize(x), (x - IMAGE_MEAN) / IMAGE_STD)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    y = normalize(x, mean, std)
    torch.testing.assert_close(y[:, 1], (x[:, 1] - 0.2) / 0.6)
    torch.testing.assert_close(denormalize(y, mean, std), x)
    torch.testing.assert_close(normalize(x[0], mean, std), y[0])  # (C, H, W) too
    enc = build_encoder(EncoderConfig(size="custom", width=32, depth=1, heads=2, mean=mean, std=std), InputSpec())
    assert (enc.input_mean, enc.input_std) == (mean, std)
