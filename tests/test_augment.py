"""Batched augmentations: statistics of the random choices, ranges, shapes, grey images."""

from __future__ import annotations

import pytest
import torch

from selfsup.data import augment as A


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def ramp(B: int = 4, C: int = 3, H: int = 16, W: int = 16) -> torch.Tensor:
    """Images whose pixel value encodes its column: x[..., j] = j / (W - 1)."""
    return (torch.arange(W) / (W - 1)).expand(B, C, H, W).clone()


def test_flip_probability_about_half():
    x = ramp(2000)
    out = A.horizontal_flip(x, p=0.5)
    flipped = out[:, 0, 0, 0] == 1.0  # the first column came from the last one
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert torch.equal(out[~flipped], x[~flipped])
    assert abs(flipped.float().mean().item() - 0.5) < 0.05  # 5 sigma is 0.056
    assert A.horizontal_flip(x, p=0.0).equal(x)


@pytest.mark.parametrize("scale,aspect", [((0.08, 1.0), 1.0), ((0.4, 1.0), 1.0), ((0.05, 0.4), 1.5)])
def test_crop_boxes_scale_and_ratio(scale, aspect):
    boxes = A.crop_boxes(5000, scale, (3 / 4, 4 / 3), aspect=aspect)
    cx, cy, w, h = boxes.unbind(1)
    area = w * h
    assert area.min() >= scale[0] - 1e-6 and area.max() <= scale[1] + 1e-6
    ratio = w * aspect / h  # in pixels
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (cx - w / 2).min() >= -1e-6 and (cx + w / 2).max() <= 1 + 1e-6
    assert (cy - h / 2).min() >= -1e-6 and (cy + h / 2).max() <= 1 + 1e-6
    # the whole range is used (large areas are rejected more often for skewed ratios, as torchvision)
    span = scale[1] - scale[0]
    assert area.min() < scale[0] + 0.02 * span and area.max() > scale[1] - 0.1 * span


def test_crop_box_fallback_is_central():
    boxes = A.crop_boxes(10, (0.99, 1.0), (1.0, 1.0), aspect=2.0)  # a square crop cannot cover 99%
    assert torch.allclose(boxes, torch.tensor([0.5, 0.5, 0.5, 1.0]).expand(10, 4))


def test_crop_resize_boxes():
    x = torch.rand(3, 3, 8, 8)
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(3, 4)
    assert torch.allclose(A.crop_resize(x, full, 8), x, atol=1e-5)
    left = torch.tensor([[0.25, 0.5, 0.5, 1.0]]).expand(3, 4)  # the left half at its own resolution
    assert torch.allclose(A.crop_resize(x, left, (8, 4)), x[..., :4], atol=1e-5)
    half = A.crop_resize(x, full, (8, 4))  # whole image at half width: means of column pairs
    assert torch.allclose(half, 0.5 * (x[..., 0::2] + x[..., 1::2]), atol=1e-5)


def test_random_resized_crop_shapes_and_range():
    x = torch.rand(6, 3, 32, 32)
    assert A.random_resized_crop(x).shape == (6, 3, 32, 32)
    y = A.random_resized_crop(x, size=12, scale=(0.05, 0.4))
    assert y.shape == (6, 3, 12, 12) and y.min() >= 0 and y.max() <= 1


def test_greyscale_makes_channels_equal():
    x = torch.rand(1000, 3, 4, 4)
    out = A.random_grayscale(x, p=0.2)
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert abs(grey.float().mean().item() - 0.2) < 0.07
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(out[grey, 0], luma[grey], atol=1e-6)
    g = torch.rand(5, 1, 4, 4)
    assert A.random_grayscale(g, p=1.0).equal(g)


def test_solarize_threshold():
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101).expand(4, 3, 2, 101)
    out = A.solarize(x, p=1.0, threshold=0.5)
    expect = torch.where(x >= 0.5, 1 - x, x)
    assert torch.equal(out, expect)
    assert A.solarize(x, p=0.0).equal(x)


def test_hsv_round_trip_and_hue_shift():
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    green = A.adjust_hue(red, torch.tensor([1 / 3]))  # 120 degrees
    assert torch.allclose(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(A.adjust_hue(x, torch.zeros(4)), x, atol=1e-5)


def test_colour_adjustments_by_formula():
    x = torch.rand(2, 3, 4, 4)
    f = torch.tensor([0.5, 1.5])
    assert torch.allclose(A.adjust_brightness(x, f), (x * f.view(2, 1, 1, 1)).clamp(0, 1))
    g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    m = g.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(A.adjust_contrast(x, f), (m + f.view(2, 1, 1, 1) * (x - m)).clamp(0, 1), atol=1e-6)
    assert torch.allclose(A.adjust_saturation(x, f), (g + f.view(2, 1, 1, 1) * (x - g)).clamp(0, 1), atol=1e-6)
    assert torch.allclose(A.adjust_saturation(x, torch.zeros(2)), g.expand_as(x), atol=1e-6)


def test_colour_jitter_probability_range_and_grey():
    x = torch.rand(400, 3, 8, 8)
    out = A.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8)
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(changed.float().mean().item() - 0.8) < 0.1
    assert out.min() >= 0 and out.max() <= 1
    g = torch.rand(50, 1, 8, 8)
    og = A.color_jitter(g, 0.4, 0.4, 0.4, 0.1, p=1.0)
    assert og.shape == g.shape and og.min() >= 0 and og.max() <= 1
    assert A.color_jitter(x, p=0.0).equal(x)


def test_gaussian_blur_kernels_and_effect():
    k = A.gaussian_kernels(torch.tensor([1.0, 2.0]), 7)
    r = torch.arange(7) - 3.0
    for i, s in enumerate((1.0, 2.0)):
        ref = torch.exp(-(r**2) / (2 * s * s))
        assert torch.allclose(k[i], ref / ref.sum(), atol=1e-6)
    x = torch.rand(64, 3, 32, 32)
    assert A.gaussian_blur(x, p=0.0).allclose(x, atol=1e-6)
    out = A.gaussian_blur(x, sigma=(1.0, 2.0), p=1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert out.std() < x.std() * 0.8  # blur smooths noise
    # a constant image stays constant (normalised kernels, reflect padding)
    c = torch.full((2, 1, 9, 9), 0.3)
    assert torch.allclose(A.gaussian_blur(c, p=1.0), c, atol=1e-6)
    # per-image sigma: a blurred image of one sample must not depend on the others
    one = A.gaussian_blur(x[:1], sigma=(1.5, 1.5), p=1.0)
    torch.manual_seed(1)
    both = A.gaussian_blur(torch.cat([x[:1], x[1:2]]), sigma=(1.5, 1.5), p=1.0)
    assert torch.allclose(one, both[:1], atol=1e-6)


def test_multi_crop_shapes():
    x = torch.rand(5, 3, 32, 32)
    views = A.multi_crop(x, n_global=2, n_local=4, local_size=12)
    assert [tuple(v.shape) for v in views] == [(5, 3, 32, 32)] * 2 + [(5, 3, 12, 12)] * 4
    assert A.local_crop_size(224, 16) == 96 and A.local_crop_size(32, 4) == 12
    assert len(A.multi_crop(x, 2, 0)) == 2


def test_presets_shapes_ranges_grey():
    for C in (3, 1):
        x = torch.rand(8, C, 32, 32)
        v1, v2 = A.simclr_views(x)
        assert v1.shape == v2.shape == x.shape
        assert not torch.equal(v1, v2)
        views = A.dino_views(x, n_local=3)
        assert [v.shape[-1] for v in views] == [32, 32, 16, 16, 16]
        for v in [v1, v2, *views]:
            assert v.shape[:2] == (8, C) and v.min() >= 0 and v.max() <= 1 and torch.isfinite(v).all()
    big = torch.rand(2, 3, 64, 64)
    assert A.simclr_views(big)[0].shape == big.shape  # with blur


def test_batched_not_per_image():
    """No Python loop over images: the number of torch calls does not grow with the batch."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    def calls(B: int) -> int:
        Count.n = 0
        with Count():
            A.simclr_views(torch.rand(B, 3, 48, 48))  # > 32 px: with blur
            A.dino_views(torch.rand(B, 3, 16, 16), n_local=4)
        return Count.n

    assert calls(64) == calls(256)


def test_dino_solarizes_only_the_second_global_view():
    # the second global view is the only one with solarization: values near 1 turn dark
    x = torch.ones(400, 1, 16, 16)
    views = A.dino_views(x, n_local=1)
    dark = [(v < 0.5).all(dim=(1, 2, 3)).float().mean().item() for v in views]
    assert dark[0] == 0 and dark[2] == 0
    assert abs(dark[1] - 0.2) < 0.07
