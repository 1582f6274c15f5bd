"""ResNet (torchvision layout), text transformer + BPE tokenizer, log-mel audio front end."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder, resnet
from selfsup.encoders.audio import LogMel, hz_to_mel, mel_filterbank, mel_to_hz, pad_or_trim, spec_augment
from selfsup.encoders.text import EOT_ID, PAD_ID, SOT_ID, TextTransformer, decode, encode_batch, train_tokenizer

# --- ResNet --------------------------------------------------------------------------------------

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(blocks: list[int], bottleneck: bool) -> list[str]:
    """torchvision.models.resnet state-dict keys (without fc), written out from its layout:
    conv1, bn1, then layerL.B.{conv1,bn1,conv2,bn2[,conv3,bn3]} and layerL.0.downsample.{0,1}
    where the shape changes (every first block but ResNet-18/34's layer1)."""
    keys = ["conv1.weight", *[f"bn1.{s}" for s in BN]]
    convs = 3 if bottleneck else 2
    for li, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            for c in range(1, convs + 1):
                keys += [f"{p}.conv{c}.weight", *[f"{p}.bn{c}.{s}" for s in BN]]
            if b == 0 and (li > 1 or bottleneck):
                keys += [f"{p}.downsample.0.weight", *[f"{p}.downsample.1.{s}" for s in BN]]
    return keys


@pytest.mark.parametrize("name,blocks,bottleneck,features", [
    ("resnet18", [2, 2, 2, 2], False, 512), ("resnet50", [3, 4, 6, 3], True, 2048),
])
def test_resnet_names_and_shapes(name, blocks, bottleneck, features):
    m = resnet.build(name)
    assert list(m.state_dict()) == torchvision_keys(blocks, bottleneck)
    assert m.num_features == features
    sd = m.state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    if bottleneck:
        assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)  # v1.5
        assert sd["layer4.2.bn3.weight"].shape == (2048,)
    else:
        assert sd["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
        assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
        assert sd["layer4.1.bn2.weight"].shape == (512,)
    # the parameter counts of torchvision's models minus their 1000-class fc
    n = sum(p.numel() for p in m.parameters())
    assert n == {"resnet18": 11_689_512 - 513_000, "resnet50": 25_557_032 - 2_049_000}[name]


def test_resnet_forward_stems_and_channels():
    m = resnet.build("resnet18", in_chans=1, cifar_stem=True)
    assert m.conv1.weight.shape == (64, 1, 3, 3) and isinstance(m.maxpool, torch.nn.Identity)
    x = torch.rand(2, 1, 32, 32)
    assert m(x).shape == (2, 512)
    assert m.forward_features(x).shape == (2, 512, 4, 4)
    std = resnet.build("resnet18")
    assert std.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 512, 2, 2)
    head = resnet.build("resnet18", num_classes=10)
    assert head.state_dict()["fc.weight"].shape == (10, 512) and head(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    enc = build_encoder(EncoderConfig(name="resnet18", cifar_stem=True), InputSpec(channels=3, image_size=32))
    assert enc.num_features == 512 and enc.cifar_stem


# --- text ----------------------------------------------------------------------------------------

CAPTIONS = [
    "A dog runs across the green grass.",
    "Two children play football in the park.",
    "A man in a red shirt rides a bicycle down the street.",
    "A black and white dog jumps over a log.",
    "A woman sits on a bench near the water.",
    "Café crème, naïve façade!",
] * 4


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CAPTIONS, vocab_size=400)


def test_tokenizer_round_trip(tok):
    assert tok.token_to_id("<pad>") == PAD_ID and tok.token_to_id("<sot>") == SOT_ID
    assert tok.token_to_id("<eot>") == EOT_ID and tok.get_vocab_size() <= 400
    for text in [*CAPTIONS[:6], "An UNSEEN word: zyxwvut 123 ☃"]:
        ids = tok.encode(text).ids
        assert ids[0] == SOT_ID and ids[-1] == EOT_ID
        assert decode(tok, ids) == text.lower()


def test_encode_batch_pads_and_truncates(tok):
    ids = encode_batch(tok, ["a dog", CAPTIONS[2]], context_length=8)
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    n = len(tok.encode("a dog").ids)
    assert ids[0, :n].tolist() == tok.encode("a dog").ids and (ids[0, n:] == PAD_ID).all()
    assert ids[1, 0] == SOT_ID and ids[1, -1] == EOT_ID and (ids[1] != PAD_ID).all()  # cut, <eot> kept


def test_text_causal_mask_is_causal(tok):
    torch.manual_seed(0)
    model = TextTransformer(vocab_size=400, context_length=12, width=32, depth=2, heads=4, output_dim=16).eval()
    a = encode_batch(tok, ["a man rides a bicycle down the street"], 12)
    b = a.clone()
    b[0, 5] = (a[0, 5] + 7) % 400 + 3  # another ordinary token at position 5
    fa, fb = model.forward_features(a), model.forward_features(b)
    assert torch.allclose(fa[:, :5], fb[:, :5], atol=1e-6)  # earlier positions do not see it
    assert not torch.allclose(fa[:, 5:], fb[:, 5:], atol=1e-4)
    bi = TextTransformer(vocab_size=400, context_length=12, width=32, depth=2, heads=4, output_dim=16,
                         causal=False, pool="mean").eval()
    assert not torch.allclose(bi.forward_features(a)[:, :5], bi.forward_features(b)[:, :5], atol=1e-4)


def test_text_pooling_ignores_padding(tok):
    torch.manual_seed(0)
    for causal, pool in ((True, "eot"), (False, "mean"), (False, "cls")):
        model = TextTransformer(vocab_size=400, context_length=16, width=32, depth=2, heads=4, output_dim=16,
                                causal=causal, pool=pool).eval()
        short, long = encode_batch(tok, ["a dog"], 8), encode_batch(tok, ["a dog"], 16)
        assert torch.allclose(model(short), model(long), atol=1e-5), (causal, pool)
    with pytest.raises(ValueError):
        TextTransformer(causal=True, pool="cls")


def test_text_tokenizer_travels_in_state_dict(tok):
    m = TextTransformer(vocab_size=400, context_length=8, width=32, depth=1, heads=4, output_dim=16)
    with pytest.raises(RuntimeError):
        m.tokenize(["a dog"])
    m.set_tokenizer(tok)
    sd = m.state_dict()
    fresh = TextTransformer(vocab_size=400, context_length=8, width=32, depth=1, heads=4, output_dim=16)
    fresh.load_state_dict(sd)
    assert fresh.tokenizer.to_str() == tok.to_str()
    assert torch.equal(fresh.tokenize(["a dog runs"]), m.tokenize(["a dog runs"]))
    assert torch.allclose(fresh.encode(["a dog runs"]), m.encode(["a dog runs"]))


# --- audio ---------------------------------------------------------------------------------------


def test_mel_scales_by_formula():
    assert math.isclose(float(hz_to_mel(700.0)), 2595 * math.log10(2))
    assert math.isclose(float(hz_to_mel(500.0, "slaney")), 7.5)  # linear part: f / (200 / 3)
    assert math.isclose(float(hz_to_mel(1000.0, "slaney")), 15.0)
    assert math.isclose(float(hz_to_mel(2000.0, "slaney")), 15 + 27 * math.log(2) / math.log(6.4))
    f = torch.tensor([0.0, 300.0, 1000.0, 3500.0])
    for s in ("htk", "slaney"):
        assert torch.allclose(mel_to_hz(hz_to_mel(f, s), s), f.double(), atol=1e-6)


def test_mel_filterbank_against_formula():
    sr, n_fft, n_mels = 8000, 256, 10
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr)
    assert fb.shape == (129, 10)
    # by hand: HTK centres equally spaced in mel between 0 and mel(4000) Hz
    top = 2595 * math.log10(1 + 4000 / 700)
    centres = [700 * (10 ** (top * i / (n_mels + 1) / 2595) - 1) for i in range(n_mels + 2)]
    for m in (0, 4, 9):
        lo, mid, hi = centres[m], centres[m + 1], centres[m + 2]
        for k in range(129):
            f = k * sr / n_fft
            w = max(0.0, min((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
            assert math.isclose(float(fb[k, m]), w, abs_tol=1e-6), (m, k)
    slaney = mel_filterbank(129, n_mels, sr, norm="slaney")
    for m in (0, 5):
        assert torch.allclose(slaney[:, m], fb[:, m] * 2 / (centres[m + 2] - centres[m]), atol=1e-7)


def test_log_mel_of_a_sine_peaks_at_its_mel_bin():
    sr, n_mels = 8000, 32
    front = LogMel(sample_rate=sr, n_mels=n_mels, frames=32, clip_seconds=1.0)
    t = torch.arange(sr) / sr
    for hz in (440.0, 1000.0, 2500.0):
        spec = front(torch.sin(2 * math.pi * hz * t)[None])
        assert spec.shape == (1, 1, n_mels, 32) and spec.min() >= 0 and spec.max() <= 1
        centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(sr / 2)), n_mels + 2))[1:-1]
        expected = int((centres - hz).abs().argmin())
        assert int(spec[0, 0].mean(dim=1).argmax()) == expected, hz


def test_log_mel_pads_short_clips_and_crops_long_ones():
    front = LogMel(sample_rate=8000, n_mels=16, frames=16, clip_seconds=1.0)
    short = torch.randn(2000)  # a quarter of the clip: the rest is silence (0 after scaling)
    out = front([short, torch.randn(20000)])
    assert out.shape == (2, 1, 16, 16)
    assert out[0, 0, :, 6:].abs().max() == 0 and out[1, 0].min() > 0
    assert pad_or_trim(torch.ones(2, 5), 3).shape == (2, 3)
    rc = front(torch.randn(3, 20000), torch.tensor([20000, 20000, 500]), random_crop=True)
    assert rc.shape == (3, 1, 16, 16)
    torch.manual_seed(0)
    masked = spec_augment(torch.ones(64, 1, 16, 16), freq_mask=4, time_mask=4)[:, 0]
    zero_rows, zero_cols = (masked == 0).all(dim=2), (masked == 0).all(dim=1)  # (B, 16) each
    assert zero_rows.sum(1).max() <= 4 and zero_cols.sum(1).max() <= 4 and zero_rows.any() and zero_cols.any()
    banded = zero_rows[:, :, None] | zero_cols[:, None, :]
    assert torch.equal(masked == 0, banded)  # every masked bin lies in a masked band


def test_audio_spectrogram_goes_through_the_vit():
    spec = InputSpec(modality="audio_text", channels=1, image_size=32, sample_rate=8000)
    vit = build_encoder(EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=8), spec)
    front = LogMel(sample_rate=8000, n_mels=32, frames=32)
    assert vit(front(torch.randn(2, 8000))).shape == (2, 32)
