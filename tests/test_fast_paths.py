"""The fast paths compute the same function as the plain ones, on random inputs.

SDPA vs explicit softmax attention, qkv split vs the permute + unbind reference, patch embedding
as a matmul vs the convolution, embedding only the visible patches vs embedding all then
gathering, fused vs for-loop AdamW, and torch.compile vs eager for the MAE loss.
"""

import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from selfsup.data.spec import InputSpec, normalize
from selfsup.encoders import EncoderConfig
from selfsup.encoders.layers import Attention, PatchEmbed
from selfsup.encoders.vit import vit
from selfsup.methods import build_method
from selfsup.methods.mae import mae_loss, patchify, random_masking


def tiny_mae(**opts):
    enc = EncoderConfig(size="custom", width=32, depth=2, heads=2, patch_size=4)
    cfg = {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2, "augment": "none", **opts}
    return build_method("mae", cfg, enc, InputSpec(channels=3, image_size=16))


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The plain computation: qkv by reshape + permute, explicit softmax(q k^T / sqrt(d)) v."""
    B, T, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, T, 3, attn.heads, D // attn.heads).permute(2, 0, 3, 1, 4)
    a = ((q @ k.transpose(-2, -1)) * (D // attn.heads) ** -0.5).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("dim,heads,tokens", [(32, 2, 5), (48, 3, 17), (64, 4, 65)])
def test_attention_fast_path_equals_reference_with_gradients(dim, heads, tokens):
    torch.manual_seed(0)
    attn = Attention(dim, heads)
    x = torch.randn(3, tokens, dim, requires_grad=True)
    fast = attn(x)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, attn.qkv.weight])
    ref = reference_attention(attn, x)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, attn.qkv.weight])
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    explicit, weights = attn(x, return_attention=True)  # the path attention maps use
    torch.testing.assert_close(explicit, ref, atol=1e-5, rtol=1e-5)
    assert weights.shape == (3, heads, tokens, tokens)


def test_patch_embed_matmul_equals_convolution_with_gradients():
    torch.manual_seed(0)
    pe = PatchEmbed(4, 3, 24)
    x = torch.randn(2, 3, 16, 12)
    fast = pe(x)
    g_fast = torch.autograd.grad(fast.square().sum(), [pe.proj.weight, pe.proj.bias])
    conv = F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=4).flatten(2).transpose(1, 2)
    g_conv = torch.autograd.grad(conv.square().sum(), [pe.proj.weight, pe.proj.bias])
    assert fast.shape == (2, 12, 24)
    torch.testing.assert_close(fast, conv, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_conv, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    keep = torch.tensor([[0, 5, 11], [3, 2, 1]])
    subset = pe(x, keep)
    pe.proj = torch.nn.Sequential(pe.proj)  # replaced or wrapped (e.g. by an adapter): the module is called
    torch.testing.assert_close(pe(x), fast, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pe(x, keep), subset, atol=1e-5, rtol=1e-5)


def test_embedding_visible_patches_equals_gathering_all_tokens():
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=1, heads=2, img_size=16, patch_size=4, sincos_pos=False)
    x = torch.randn(3, 3, 16, 16)
    keep = torch.rand(3, 16).argsort(1)[:, :5]
    everything = model.embed_patches(x)
    gathered = torch.gather(everything, 1, keep.unsqueeze(-1).expand(-1, -1, 32))
    torch.testing.assert_close(model.embed_patches(x, keep), gathered, atol=1e-6, rtol=1e-6)
    # at another image size the position embedding is interpolated, for the visible ones too
    x24, keep24 = torch.randn(2, 3, 24, 24), torch.rand(2, 36).argsort(1)[:, :9]
    all24 = model.embed_patches(x24)
    torch.testing.assert_close(model.embed_patches(x24, keep24),
                               torch.gather(all24, 1, keep24.unsqueeze(-1).expand(-1, -1, 32)), atol=1e-6, rtol=1e-6)


def test_mae_loss_equals_the_embed_all_then_gather_path():
    model = tiny_mae(norm_pix_loss=True)
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    fast = model({"image": images})["loss"]
    torch.manual_seed(1)  # same masks: the masking draws the same random numbers
    x = normalize(images)
    tokens = model.encoder.embed_patches(x)
    keep, mask, restore = random_masking(4, 16, model.cfg.mask_ratio)
    pred = model.decode(model.encoder.forward_tokens(tokens, keep), restore)
    plain = mae_loss(pred, patchify(x, 4), mask, norm_pix=True)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_fused_adamw_equals_for_loop_adamw():
    torch.manual_seed(0)
    shapes = [(64, 32), (32,), (3, 5, 7), (1, 1, 16)]
    a = [torch.randn(s, requires_grad=True) for s in shapes]
    b = [p.detach().clone().requires_grad_() for p in a]
    opts = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    opt_a, opt_b = torch.optim.AdamW(a, fused=True, **opts), torch.optim.AdamW(b, foreach=False, **opts)
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for params, opt in ((a, opt_a), (b, opt_b)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_compiled_mae_loss_and_gradients_equal_eager():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    eager = tiny_mae()
    compiled = tiny_mae()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    images = torch.rand(4, 3, 16, 16)
    with inductor_config.patch(fallback_random=True):  # the compiled masks draw eager's random numbers
        t = time.perf_counter()
        torch.manual_seed(3)
        loss_c = compiled({"image": images})["loss"]
        loss_c.backward()
        if time.perf_counter() - t > 300:
            pytest.skip("torch.compile took over 5 minutes on this machine")
    torch.manual_seed(3)
    loss_e = eager({"image": images})["loss"]
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, atol=1e-5, rtol=1e-5)
    for (name, pc), pe in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        if pe.grad is not None:
            torch.testing.assert_close(pc.grad, pe.grad, atol=1e-4, rtol=1e-3, msg=name)
