"""The one trunk under every encoder (issue 19): its contracts on images, tables and series, and
16-bit images treated as images wherever inputs are told apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.adapt import finetune as adapt_finetune
from selfsup.data.inputs import is_images
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.trunk import Maskable, Trunk
from selfsup.evaluate.features import raw_pair

ENC = EncoderConfig(size="custom", width=16, depth=2, heads=2, patch_size=4, series_patch=8)
SPECS = {
    "image": InputSpec(channels=1, image_size=8),
    "table": InputSpec(modality="table", num_features=3, cardinalities=[4]),
    "series": InputSpec(modality="series", channels=2, series_length=32),
}


def inputs(kind: str):
    g = torch.Generator().manual_seed(0)
    if kind == "image":
        return torch.rand(3, 1, 8, 8, generator=g)
    if kind == "table":
        return {"features": torch.randn(3, 3, generator=g), "categories": torch.tensor([[1], [2], [3]])}
    return {"series": torch.randn(3, 2, 32, generator=g)}


@pytest.mark.parametrize("kind", list(SPECS))
def test_every_encoder_is_the_trunk_with_a_maskable_tokenizer(kind):
    torch.manual_seed(0)
    enc = build_encoder(ENC, SPECS[kind]).eval()
    assert isinstance(enc, Trunk) and isinstance(enc, Maskable)
    names = [n for n, _ in enc.named_parameters()]
    # layer ids: blocks i -> i + 1, the final norm at the top, the tokenizer at 0
    assert enc.layer_id("blocks.1.attn.qkv.weight") == 2 and enc.layer_id("norm.weight") == enc.num_layers == 3
    assert all(enc.layer_id(n) == 0 for n in names if not n.startswith(("blocks.", "norm.")))
    assert enc.no_weight_decay() <= set(names) | {"pos_embed"}
    x = inputs(kind)
    with torch.no_grad():
        tokens = enc.forward_features(x)
        last, inter = enc.forward_intermediates(x, [0, 1], output_fmt="NLC")
    assert len(inter) == 2 and inter[1].shape[-1] == 16
    # the last intermediate through the final norm is the encoder's own output tokens
    P = enc.num_prefix_tokens
    assert torch.allclose(last.reshape(tokens.shape), tokens, atol=1e-5)
    assert torch.allclose(enc.norm(inter[1]), last[:, P:], atol=1e-5)


def test_lengths_run_padded_rows_as_if_alone():
    torch.manual_seed(0)
    enc = build_encoder(ENC, SPECS["series"]).eval()
    t = torch.randn(2, 5, 16)
    with torch.no_grad():
        both = enc.forward_tokens(t, lengths=torch.tensor([5, 3]))
        alone = enc.forward_tokens(t[1:, :3])
    assert torch.allclose(both[1, :3], alone[0], atol=1e-6) and both[1, 3:].abs().sum() == 0


def test_sixteen_bit_images_are_images():
    x16 = torch.randint(0, 65536, (4, 1, 8, 8), dtype=torch.int32).to(torch.uint16)
    assert is_images(x16) and is_images(x16.to(torch.int32).div(257).to(torch.uint8))
    assert not is_images(torch.randn(4, 1, 8, 8))  # float (N, C, H, W) is not an image batch
    a, b = raw_pair(x16[:2], x16[2:])
    assert a.shape == (2, 64) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    want = x16[2:].to(torch.int32).float().reshape(2, -1) / 65535.0
    assert np.allclose(b.numpy(), want.numpy(), atol=1e-6)


def test_finetuning_augments_sixteen_bit_images(monkeypatch):
    seen = []
    real = adapt_finetune.random_shift

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(adapt_finetune, "random_shift", spy)
    torch.manual_seed(0)
    model = adapt_finetune.Classifier(build_encoder(ENC, SPECS["image"]), 2)
    x = torch.randint(0, 65536, (8, 1, 8, 8), dtype=torch.int32).to(torch.uint16)
    recipe = adapt_finetune.FinetuneRecipe(batch_size=4, min_steps=0, max_steps=2)
    adapt_finetune.train_classifier(model, x, torch.arange(8) % 2, recipe, generator=torch.Generator())
    assert seen and all(d == torch.float32 for d in seen)
