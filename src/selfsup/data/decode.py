"""Safe decoding of image and audio bytes into the sample contract's tensors.

Every failure becomes a `DecodeError` whose message is a short reason ("empty", "corrupt",
"truncated", "too large: ..."), so sources can skip the sample and count why, instead of an
exception reaching the training loop.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_EXTS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff")  # the one list of image files we read
IMAGE_SUFFIXES = tuple("." + e for e in IMAGE_EXTS)
MAX_PIXELS = 64 * 2**20  # refuse images above 64M pixels before decoding them (decompression bombs)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class DecodeError(ValueError):
    """A sample that cannot be decoded; the message is the reason counted in skip summaries."""


def open_image(data: bytes, draft: int | None = None) -> Image.Image:
    """Bytes -> fully loaded PIL image; raises DecodeError: "empty", "corrupt", "truncated", "too large".

    `draft`: let JPEG decode at a reduced scale whose sides stay >= draft (much faster for photos).
    """
    if not data:
        raise DecodeError("empty")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise DecodeError(f"too large: {w}x{h} pixels")
        if draft is not None and img.format == "JPEG":
            img.draft(None, (draft, draft))
        img.load()  # inside the try: truncation only shows when the pixels are read
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError("too large") from e
    except Image.UnidentifiedImageError as e:
        raise DecodeError("corrupt") from e
    except EOFError as e:
        raise DecodeError("truncated") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad streams
        raise DecodeError("truncated" if "truncated" in str(e).lower() else "corrupt") from e
    return img


def image_channels(img: Image.Image) -> int:
    """1 for grey modes (L, LA, 16-bit, float), else 3."""
    return 1 if img.mode in GREY_MODES else 3


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (channels=1) or "RGB" (channels=3).

    Alpha is composited on black (transparent pixels often hold junk colours); 16-bit and int32
    images are scaled to 8 bit; palette, CMYK, YCbCr... go through PIL's own conversions.
    """
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float32)
        peak = float(a.max(initial=0.0))
        if img.mode.startswith("I;16") or (img.mode == "I" and peak > 255):
            a = a / 257.0  # 16-bit range -> 8-bit
        elif img.mode == "F" and peak <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def crop_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The centred square of side min(w, h): resizing it = resize the short side, then centre-crop."""
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return left, top, left + s, top + s


def decode_image(data: bytes, channels: int, image_size: int, fit: str = "crop") -> torch.Tensor:
    """Encoded image bytes -> uint8 (channels, image_size, image_size); raises DecodeError.

    ``fit`` "crop": resize the short side and centre-crop (training and evaluation); "squash":
    resize the whole image to the square, aspect not kept (anomaly detection, where a crop
    would cut defects at an elongated part's ends).
    """
    img = open_image(data, draft=image_size)
    try:
        img = to_mode(img, channels)
        w, h = img.size
        if (w, h) != (image_size, image_size):
            # PIL's bilinear filter widens its support when shrinking, i.e. it is antialiased.
            box = crop_box(w, h) if fit == "crop" else None
            img = img.resize((image_size, image_size), Image.BILINEAR, box=box)
        a = np.asarray(img, dtype=np.uint8)
    except Exception as e:
        raise DecodeError("corrupt") from e
    t = torch.from_numpy(a.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def fit_tensor(images: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """uint8 (C, H, W) or (B, C, H, W) -> same with `channels` and a centred square of `image_size`.

    For array sources (npz, built-ins): grey <-> RGB by repetition / ITU-R 601 luma, short side
    resized with antialiased bilinear interpolation, then centre-cropped.
    """
    single = images.ndim == 3
    x = images.unsqueeze(0) if single else images
    c = x.shape[1]
    if c != channels:
        if channels == 3:
            x = x[:, :1].expand(-1, 3, -1, -1)
        else:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x[:, :3].float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    h, w = x.shape[-2:]
    if (h, w) != (image_size, image_size):
        left, top, right, bottom = crop_box(w, h)
        x = x[..., top:bottom, left:right].float()
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    x = x.contiguous()
    return x[0] if single else x


def decode_wav(data: bytes) -> tuple[torch.Tensor, int]:
    """WAV bytes -> (float32 (T,) mono waveform in [-1, 1], sample rate); raises DecodeError.

    Uses the stdlib `wave` module (PCM 8/16/24/32 bit); channels are averaged.
    """
    if not data:
        raise DecodeError("empty")
    try:
        with wave.open(io.BytesIO(data)) as f:
            n, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
        if width == 1:
            a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif width == 2:
            a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            a = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
        elif width == 4:
            a = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
        else:
            raise DecodeError(f"unsupported sample width {width}")
        a = a[: len(a) - len(a) % n].reshape(-1, n).mean(1)
    except DecodeError:
        raise
    except EOFError as e:
        raise DecodeError("truncated") from e
    except Exception as e:
        raise DecodeError("corrupt") from e
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), rate
