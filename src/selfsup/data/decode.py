"""Safe decoding of image and audio bytes into the sample contract's tensors.

Every failure becomes a `DecodeError` whose message is a short reason ("empty", "corrupt",
"truncated", "too large: ..."), so sources can skip the sample and count why, instead of an
exception reaching the training loop.

Images come out as uint8, or uint16 when the file holds more than 8 bits (16-bit PNG and TIFF,
float TIFF, DICOM), with as many channels as asked: ``read_pixels`` gives a file's own pixels,
``convert_channels`` is the one rule between channel counts, ``fit_tensor`` resizes, and
``decode_image`` does all three. DICOM and deep or multispectral TIFF go through ``data.formats``.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup.data.formats import (
    MAX_PIXELS,
    FormatError,
    is_dicom,
    is_tiff,
    read_dicom,
    read_tiff,
    tiff_size_check,
    tiff_wants_tifffile,
    to_carrier,
)
from selfsup.data.spec import to_bits

# the one list of image files we read
IMAGE_EXTS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "dcm", "dicom")
IMAGE_SUFFIXES = tuple("." + e for e in IMAGE_EXTS)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits: kept as uint16
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


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


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """An 8-bit PIL image of any mode -> "L" (channels=1) or "RGB" (channels=3).

    Alpha is composited on black (transparent pixels often hold junk colours); palette, CMYK,
    YCbCr... go through PIL's own conversions. (Deeper modes are read by ``pil_pixels``.)
    """
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def pil_pixels(img: Image.Image) -> np.ndarray:
    """A loaded PIL image -> (H, W, C): 16-bit, int32 and float modes as uint16 (``formats.to_carrier``),
    grey modes as one uint8 channel, everything else as RGB uint8 (alpha composited on black)."""
    if img.mode in DEEP_MODES:
        a = np.asarray(img)
        a = a.astype(np.uint16) if a.dtype.kind == "u" and a.dtype.itemsize == 2 else a  # I;16B is big-endian
        c = to_carrier(a)
        return (c if c.dtype == np.uint16 else c.astype(np.uint16))[..., None]
    a = np.asarray(to_mode(img, 1 if img.mode in GREY_MODES else 3), dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def read_pixels(data: bytes, draft: int | None = None) -> np.ndarray:
    """Image bytes -> the file's own pixels (H, W, C), uint8 or uint16; raises DecodeError.

    DICOM and the TIFFs PIL would squeeze (16-bit, float, multispectral) through ``data.formats``;
    everything else through PIL (``draft`` as in ``open_image``).
    """
    if not data:
        raise DecodeError("empty")
    try:
        if is_dicom(data):
            return read_dicom(data)
        if is_tiff(data):
            if tiff_wants_tifffile(data):
                return read_tiff(data)
            tiff_size_check(data)  # PIL reads the first frame only, but a bomb is refused the same way
    except FormatError as e:
        raise DecodeError(str(e)) from e
    img = open_image(data, draft)
    try:
        return pil_pixels(img)
    except Exception as e:
        raise DecodeError("corrupt") from e


def image_info(data: bytes) -> tuple[int, int, int, int]:
    """(channels, width, height, bits) of decodable image bytes; raises DecodeError."""
    a = read_pixels(data)
    return a.shape[2], a.shape[1], a.shape[0], 16 if a.dtype == np.uint16 else 8


def crop_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The centred square of side min(w, h): resizing it = resize the short side, then centre-crop."""
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return left, top, left + s, top + s


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) uint8 / uint16 -> (B, channels, H, W), the same dtype. The one rule: equal counts
    pass; one channel is repeated; to one channel, the ITU-R 601 luma of the first three; to three,
    the first three (RGB of RGBA arrays). Any other pair is a DecodeError naming both counts."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1 and c >= 3:
        w = torch.tensor(_LUMA).view(1, 3, 1, 1)
        top = float(torch.iinfo(images.dtype).max)
        return (images[:, :3].float() * w).sum(1, keepdim=True).round().clamp(0, top).to(images.dtype)
    if channels == 3 and c > 3:
        return images[:, :3]
    raise DecodeError(f"has {c} channels; this run reads {channels} (set data.channels to choose)")


def fit_tensor(images: torch.Tensor, channels: int, image_size: int, fit: str = "crop") -> torch.Tensor:
    """uint8 / uint16 (C, H, W) or (B, C, H, W) -> same dtype with `channels` and a square of `image_size`.

    Channels by ``convert_channels``; ``fit`` "crop": short side resized with antialiased bilinear
    interpolation, then centre-cropped; "squash": the whole image resized to the square.
    """
    single = images.ndim == 3
    x = convert_channels(images.unsqueeze(0) if single else images, channels)
    h, w = x.shape[-2:]
    if (h, w) != (image_size, image_size):
        dtype, top = x.dtype, float(torch.iinfo(x.dtype).max)
        if fit == "crop":
            left, top_, right, bottom = crop_box(w, h)
            x = x[..., top_:bottom, left:right]
        x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, top).to(dtype)
    x = x.contiguous()
    return x[0] if single else x


def decode_image(data: bytes, channels: int, image_size: int, fit: str = "crop",
                 bits: int | None = None) -> torch.Tensor:
    """Encoded image bytes -> (channels, image_size, image_size), uint8 or uint16; raises DecodeError.

    ``fit`` "crop": resize the short side and centre-crop (training and evaluation); "squash":
    resize the whole image to the square, aspect not kept (anomaly detection, where a crop
    would cut defects at an elongated part's ends). ``bits`` 8 or 16 converts to that depth
    (``spec.to_bits``; a source keeps one depth for all its samples); None keeps the file's.
    """
    a = read_pixels(data, draft=image_size)
    try:
        if a.dtype == np.uint8 and a.shape[2] in (1, 3) and channels in (1, 3):
            img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (image_size, image_size):
                # PIL's bilinear filter widens its support when shrinking, i.e. it is antialiased.
                box = crop_box(*img.size) if fit == "crop" else None
                img = img.resize((image_size, image_size), Image.BILINEAR, box=box)
            t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
        else:
            t = fit_tensor(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1), channels, image_size, fit)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError("corrupt") from e
    return to_bits(t, bits) if bits else t


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
