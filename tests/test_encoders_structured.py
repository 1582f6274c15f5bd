"""The table (FT-Transformer) and series (PatchTST) tokenizers and encoders."""

from __future__ import annotations

import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, FTTransformer, PatchTST, build_encoder
from selfsup.encoders.layers import Block
from selfsup.encoders.series import patchify, revin_stats
from selfsup.encoders.tabular import FeatureTokenizer

NAN = float("nan")
SMALL = EncoderConfig(size="custom", width=16, depth=2, heads=2)


def test_feature_tokens_by_hand():
    tok = FeatureTokenizer(2, [3, 2], dim=4)
    x = torch.tensor([[2.0, NAN]])
    c = torch.tensor([[2, 5]])  # 5 is outside column 1's vocabulary of 2: read as 0 (unseen)
    t = tok(x, c)
    assert t.shape == (1, 4, 4)
    torch.testing.assert_close(t[0, 0], 2.0 * tok.weight[0] + tok.bias[0])  # x_j * W_j + b_j
    torch.testing.assert_close(t[0, 1], tok.missing[1])  # NaN -> the learned "missing" token
    torch.testing.assert_close(t[0, 2], tok.cat_embed.weight[2] + tok.cat_bias[0])
    torch.testing.assert_close(t[0, 3], tok.cat_embed.weight[3 + 0] + tok.cat_bias[1])  # offset 3, category 0


def test_ft_transformer_shapes_pools_and_row_independence():
    spec = InputSpec(modality="table", num_features=3, cardinalities=[4, 2])
    enc = build_encoder(SMALL.model_copy(update={"pool": "token"}), spec)
    assert isinstance(enc, FTTransformer) and enc.num_tokens == 5 and isinstance(enc.blocks[0], Block)
    torch.manual_seed(0)
    x, c = torch.randn(6, 3), torch.randint(0, 2, (6, 2))
    x[2, 1] = NAN
    enc.eval()
    tokens = enc.forward_features(x, c)
    assert tokens.shape == (6, 6, 16) and torch.isfinite(tokens).all()
    feats = enc({"features": x, "categories": c})  # a batch dict works too
    torch.testing.assert_close(feats, tokens[:, 0])
    perm = torch.randperm(6)
    torch.testing.assert_close(enc(x[perm], c[perm]), feats[perm], atol=1e-5, rtol=1e-5)
    assert enc.forward_features(x, c, keep=torch.tensor([[0, 4]] * 6)).shape == (6, 3, 16)
    both = build_encoder(SMALL.model_copy(update={"pool": "token+avg"}), spec)
    assert both.num_features == 32 and both(x, c).shape == (6, 32)


def test_default_sizes_follow_the_papers():
    t = build_encoder(EncoderConfig(), InputSpec(modality="table", num_features=2, cardinalities=[]))
    s = build_encoder(EncoderConfig(), InputSpec(modality="series", channels=2, series_length=50))
    assert (t.embed_dim, t.depth, t.num_heads) == (192, 3, 8)
    assert (s.embed_dim, s.depth, s.num_heads, s.patch_size, s.stride) == (128, 3, 16, 12, 12)
    with pytest.raises(ValueError, match="cannot encode table data"):
        build_encoder(EncoderConfig(name="patch_tst"), InputSpec(modality="table", num_features=2))
    with pytest.raises(ValueError, match="needs table or series data"):
        build_encoder(EncoderConfig(name="ft_transformer"), InputSpec())


def test_patchify_pads_the_end_with_nan_and_revin_skips_nan():
    x = torch.arange(10.0).reshape(1, 1, 10)
    p = patchify(x, 4, 4)  # starts 0, 4, 8 -> the last patch holds steps 8, 9 and two pads
    assert p.shape == (1, 1, 3, 4) and p[0, 0, 2, :2].tolist() == [8, 9] and torch.isnan(p[0, 0, 2, 2:]).all()
    assert patchify(x, 4, 3).shape == (1, 1, 3, 4)  # starts 0, 3, 6: step 9 is the last of the third
    assert patchify(torch.zeros(1, 1, 3), 4, 4).shape == (1, 1, 1, 4)
    mean, std = revin_stats(torch.tensor([[[1.0, 3.0, NAN]]]))
    assert mean.item() == 2.0 and std.item() == pytest.approx(1.0, abs=1e-5)


def test_patch_tst_shapes_scale_invariance_and_exact_padding():
    torch.manual_seed(0)
    enc = build_encoder(SMALL.model_copy(update={"series_patch": 8}), InputSpec(modality="series", channels=2))
    assert isinstance(enc, PatchTST) and enc.num_features == 32
    enc.eval()
    x = torch.randn(3, 2, 40)
    assert enc.forward_features(x).shape == (3, 2, 5, 16)
    feats = enc(x)
    torch.testing.assert_close(enc(3.0 * x + 7.0), feats, atol=1e-4, rtol=1e-4)  # RevIN
    # channel independence: a channel's features do not depend on the other channel
    y = x.clone()
    y[:, 1] = torch.randn(3, 40)
    torch.testing.assert_close(enc(y)[:, :16], feats[:, :16], atol=1e-5, rtol=1e-5)
    # a series padded with NaN in a batch encodes as it does alone
    short = x[:1, :, :24]
    padded = torch.cat([short, torch.full((1, 2, 16), NAN)], dim=-1)
    batch = torch.cat([padded, x[1:]])
    torch.testing.assert_close(enc(batch)[0], enc(short)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc({"series": batch})[1:], feats[1:], atol=1e-5, rtol=1e-5)


def test_patch_tst_missing_steps_and_gradients():
    enc = PatchTST(1, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    x = torch.randn(2, 1, 16)
    x[0, 0, 4:8] = NAN  # a whole patch missing inside the series: the pad token stands in
    out = enc(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert enc.pad_token.grad is not None and enc.pad_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.patch_embed.parameters())
