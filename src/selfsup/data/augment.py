"""Batched image augmentations in plain torch, on the batch's device.

Every function takes float images in [0, 1] shaped (B, C, H, W) (C = 3 for colour, 1 for grey)
and draws its random parameters per sample, but applies them to the whole batch at once: crops
are one ``affine_grid``/``grid_sample``, blur is one grouped convolution, colour jitter is a few
element-wise ops. So augmentation runs on the GPU as fast as the model and needs no PIL workers.

Semantics follow torchvision's transforms (factor ranges, greyscale weights, solarize threshold)
and the presets follow the papers: ``simclr_views`` (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", appendix A) and ``dino_views`` (Caron et al.
2021, "Emerging Properties in Self-Supervised Vision Transformers", ``main_dino.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, as PIL's convert("L") and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _coin(n: int, p: float, device) -> torch.Tensor:
    """Bool (n,): True with probability p."""
    return torch.rand(n, device=device) < p


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> luma (B, 1, H, W); grey input passes through; other than 3 channels
    (multispectral): their mean."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        return images.mean(dim=1, keepdim=True)
    w = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Geometry


def crop_boxes(
    n: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    aspect: float = 1.0,
    device=None,
    tries: int = 10,
) -> torch.Tensor:
    """Random crop boxes as torchvision's ``RandomResizedCrop.get_params``, for n images at once.

    Returns (n, 4) rows (cx, cy, w, h) as fractions of the image width/height. Area fraction is
    uniform in ``scale``, log aspect ratio uniform in log ``ratio``; like torchvision, up to
    ``tries`` draws per image and then a central crop of the clamped ratio. ``aspect`` is the
    image's W / H, so that ``ratio`` is about pixels, not fractions.
    """
    area = torch.empty(n, tries, device=device).uniform_(*scale)
    logr = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = logr.exp()
    w = (area * r / aspect).sqrt()  # fraction of W: (w W)(h H) = area W H and (w W)/(h H) = r
    h = (area / r * aspect).sqrt()
    ok = (w <= 1) & (h <= 1)
    first = ok.float().argmax(dim=1, keepdim=True)  # first valid try (0 when none is valid)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    none_ok = ~ok.any(dim=1)
    if none_ok.any():  # central crop with the ratio clamped to the range, as torchvision
        r_img = min(max(aspect, ratio[0]), ratio[1])
        fw, fh = (1.0, aspect / r_img) if aspect <= r_img else (r_img / aspect, 1.0)
        w = torch.where(none_ok, torch.full_like(w, fw), w)
        h = torch.where(none_ok, torch.full_like(h, fh), h)
    cx = torch.rand(n, device=device) * (1 - w) + w / 2
    cy = torch.rand(n, device=device) * (1 - h) + h / 2
    cx = torch.where(none_ok, torch.full_like(cx, 0.5), cx)
    cy = torch.where(none_ok, torch.full_like(cy, 0.5), cy)
    return torch.stack([cx, cy, w, h], dim=1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Cut box (cx, cy, w, h) (B, 4) out of each image and resize it bilinearly to ``size``."""
    B, C = images.shape[:2]
    oh, ow = (size, size) if isinstance(size, int) else size
    cx, cy, w, h = boxes.to(images.dtype).unbind(dim=1)
    theta = torch.zeros(B, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta, [B, C, oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): a random box per image (``crop_boxes``), resized.

    ``size`` defaults to the input size; smaller sizes give DINO's local crops. Resizing is
    bilinear without antialiasing, so strong down-scaling (e.g. 224 -> 96) aliases a little more
    than torchvision's antialiased resize.
    """
    B, _, H, W = images.shape
    boxes = crop_boxes(B, scale, ratio, aspect=W / H, device=images.device)
    return crop_resize(images, boxes, size if size is not None else (H, W))


def horizontal_flip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = _coin(images.shape[0], p, images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


# ---------------------------------------------------------------------------------------------
# Colour


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Per-image factor f (B,): x * f."""
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma: m + f (x - m)."""
    m = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (m + f.view(-1, 1, 1, 1) * (x - m)).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's own greyscale: g + f (x - g). Colour images only."""
    g = grayscale(x)
    return (g + f.view(-1, 1, 1, 1) * (x - g)).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV with hue in [0, 1) -> RGB, by the closed form f(n) = v - v s max(0, min(k, 4 - k, 1))."""
    h, s, v = x.unbind(dim=1)
    out = []
    for n in (5, 3, 1):
        k = (n + h * 6) % 6
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(out, dim=1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (B,) turns (in [-0.5, 0.5]) through HSV. Colour images only."""
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, :1] + shift.view(-1, 1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).clamp(0, 1)


def color_jitter(
    images: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
) -> torch.Tensor:
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)``, batched.

    Each selected image gets factors uniform in [max(0, 1 - b), 1 + b] (same for contrast and
    saturation), a hue shift uniform in [-hue, hue], and the four adjustments in its own random
    order. Grey (1-channel) images skip saturation and hue. The loop is over the 4 x 4 (slot, op)
    pairs, each applied to the images that have that op in that slot: 4 ops' worth of work.
    """
    B, C = images.shape[:2]
    dev = images.device
    chosen = _coin(B, p, dev).nonzero().squeeze(1)
    if chosen.numel() == 0:
        return images
    x = images[chosen]
    n = len(chosen)
    factors = [
        _uniform(n, max(0.0, 1 - brightness), 1 + brightness, dev),
        _uniform(n, max(0.0, 1 - contrast), 1 + contrast, dev),
        _uniform(n, max(0.0, 1 - saturation), 1 + saturation, dev),
        _uniform(n, -hue, hue, dev),
    ]
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    active = [brightness > 0, contrast > 0, saturation > 0 and C == 3, hue > 0 and C == 3]
    order = torch.rand(n, 4, device=dev).argsort(dim=1)  # per-image permutation of the 4 ops
    for slot in range(4):
        for j, op in enumerate(ops):
            if not active[j]:
                continue
            idx = (order[:, slot] == j).nonzero().squeeze(1)
            if idx.numel():
                x[idx] = op(x[idx], factors[j][idx])
    out = images.clone()
    out[chosen] = x
    return out


def random_grayscale(images: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    """Replace each colour image by its luma (kept 3 channels) with probability p; grey input passes."""
    if images.shape[1] == 1:
        return images
    grey = grayscale(images).expand_as(images)
    return torch.where(_coin(images.shape[0], p, images.device)[:, None, None, None], grey, images)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """1-D normalised Gaussian kernels (B, size) for per-image ``sigma`` (B,); size odd."""
    r = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2
    k = torch.exp(-(r[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(
    images: torch.Tensor,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    kernel_size: int | None = None,
) -> torch.Tensor:
    """Blur each image with probability p by a Gaussian of sigma uniform in ``sigma`` (pixels).

    The kernel spans about 10% of the image side (SimCLR), at least 3 taps and odd, clipped to
    the image. Separable: a horizontal then a vertical pass, each one grouped convolution with a
    kernel per (image, channel); images not selected get the identity kernel.
    """
    B, C, H, W = images.shape
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * min(H, W)) // 2 * 2 + 1)
    kernel_size = min(kernel_size, (min(H, W) - 1) // 2 * 2 + 1)
    s = _uniform(B, *sigma, images.device).to(images.dtype)
    k = gaussian_kernels(s, kernel_size)
    identity = torch.zeros_like(k)
    identity[:, kernel_size // 2] = 1.0
    k = torch.where(_coin(B, p, images.device)[:, None], k, identity)
    k = k.repeat_interleave(C, dim=0)  # (B * C, K): image b's kernel for each of its channels
    pad = kernel_size // 2
    x = images.reshape(1, B * C, H, W)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k[:, None, None, :], groups=B * C)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k[:, None, :, None], groups=B * C)
    return x.reshape(B, C, H, W)


def solarize(images: torch.Tensor, p: float = 0.2, threshold: float = 0.5) -> torch.Tensor:
    """With probability p per image, invert the pixels at or above ``threshold``: x -> 1 - x."""
    solar = torch.where(images >= threshold, 1.0 - images, images)
    return torch.where(_coin(images.shape[0], p, images.device)[:, None, None, None], solar, images)


# ---------------------------------------------------------------------------------------------
# Views


def local_crop_size(size: int, multiple: int = 8) -> int:
    """DINO's local crop side for a global side ``size``: 96 / 224 of it, a multiple of ``multiple``."""
    return max(multiple, int(round(size * 96 / 224 / multiple)) * multiple)


def multi_crop(
    images: torch.Tensor,
    n_global: int = 2,
    n_local: int = 6,
    global_size: int | None = None,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    flip: bool = True,
) -> list[torch.Tensor]:
    """Random resized crops (+ flip) for multi-crop training (Caron et al. 2020, SwAV; DINO).

    Returns ``n_global`` views (B, C, global_size, global_size) then ``n_local`` views
    (B, C, local_size, local_size). Sizes default to the input size and ``local_crop_size`` of it.
    All crops of one kind come from one ``grid_sample`` over the repeated batch.
    """
    B, _, H, W = images.shape
    global_size = global_size or H
    local_size = local_size or local_crop_size(global_size)
    views: list[torch.Tensor] = []
    for n, size, scale in ((n_global, global_size, global_scale), (n_local, local_size, local_scale)):
        if n == 0:
            continue
        x = random_resized_crop(images.repeat(n, 1, 1, 1), size, scale)
        if flip:
            x = horizontal_flip(x)
        views += list(x.split(B))
    return views


def simclr_views(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grey_p: float = 0.2,
    blur: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two SimCLR views of each image (Chen et al. 2020, appendix A): (B, C, H, W) twice.

    Random resized crop (scale 0.08-1, ratio 3/4-4/3), flip, colour jitter with probability 0.8
    at strength 0.5 (0.4, 0.4, 0.4, 0.1), greyscale 0.2, and Gaussian blur with probability 0.5
    (sigma 0.1-2, kernel 10% of the side). The paper drops blur on CIFAR-10; ``blur=None`` turns
    it on only for images larger than 32 pixels.
    """
    if blur is None:
        blur = min(images.shape[-2:]) > 32
    B = images.shape[0]
    x = random_resized_crop(images.repeat(2, 1, 1, 1), scale=scale)
    x = horizontal_flip(x)
    x = color_jitter(x, *jitter, p=jitter_p)
    x = random_grayscale(x, grey_p)
    if blur:
        x = gaussian_blur(x, p=0.5)
    v1, v2 = x.split(B)
    return v1, v2


def _dino_colour(x: torch.Tensor, blur_p: float, solarize_p: float) -> torch.Tensor:
    x = color_jitter(x, 0.4, 0.4, 0.2, 0.1, p=0.8)
    x = random_grayscale(x, 0.2)
    if blur_p > 0:
        x = gaussian_blur(x, p=blur_p)
    if solarize_p > 0:
        x = solarize(x, p=solarize_p)
    return x


def dino_views(
    images: torch.Tensor,
    n_local: int = 6,
    global_size: int | None = None,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
) -> list[torch.Tensor]:
    """DINO's multi-crop views (Caron et al. 2021, ``DataAugmentationDINO``): 2 global + n_local.

    Every view: crop, flip, colour jitter (0.4, 0.4, 0.2, 0.1) with probability 0.8, greyscale
    0.2. Then Gaussian blur with probability 1.0 on the first global view, 0.1 on the second
    (which also gets solarization with probability 0.2), 0.5 on the local views. Global crops
    cover 0.4-1 of the image (the paper also uses 0.14-1 with more local crops), local 0.05-0.4.
    """
    views = multi_crop(images, 2, n_local, global_size, local_size, global_scale, local_scale)
    out = [_dino_colour(views[0], 1.0, 0.0), _dino_colour(views[1], 0.1, 0.2)]
    if n_local:
        B = images.shape[0]
        out += list(_dino_colour(torch.cat(views[2:]), 0.5, 0.0).split(B))
    return out


__all__ = [
    "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation", "color_jitter",
    "crop_boxes", "crop_resize", "dino_views", "gaussian_blur", "gaussian_kernels", "grayscale",
    "horizontal_flip", "hsv_to_rgb", "local_crop_size", "multi_crop", "random_grayscale",
    "random_resized_crop", "rgb_to_hsv", "simclr_views", "solarize",
]
