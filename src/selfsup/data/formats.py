"""Image formats PIL cannot carry at full precision: DICOM (pydicom) and TIFF (tifffile).

Both give pixels as a NumPy array (H, W, C) of uint8 or uint16, the two depths images travel in
(``data.spec``): 16-bit data stays 16-bit until ``spec.to_float`` scales it to [0, 1].

- **DICOM**: the modality LUT (RescaleSlope / RescaleIntercept), then the first VOI window of the
  file's tags (WindowCenter / WindowWidth, the linear function of DICOM PS3.3 C.11.2.1.2), else the
  image's own min..max; MONOCHROME1 is inverted so that bright always means dense. The result,
  in [0, 1], is stored as uint16. Colour DICOMs are read as RGB; multi-frame files by their first
  frame. Compressed transfer syntaxes need pydicom's optional decoders; without them the file is
  a "corrupt" skip with the syntax's name.
- **TIFF**: 16-bit, 32-bit and float images, and any number of channels (multispectral: samples
  per pixel, or channel pages named C/S/Q/I by tifffile). Alpha extra-samples are dropped;
  MINISWHITE is inverted. Plain 8-bit grey, RGB, palette and CMYK TIFFs go through PIL as before.

Headers are read first and images above ``MAX_PIXELS`` refused before any pixel is decoded; so is
a file whose frames, pages and bands add up to more than ``MAX_DECODED_BYTES`` once decoded (a
multi-frame bomb), and a deflated DICOM that inflates past it. Of a multi-frame file only the frame
used (the first, all its channels) is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

MAX_PIXELS = 64 * 2**20  # refuse images above 64M pixels before decoding them (decompression bombs)
MAX_CHANNELS = 64  # more "channels" than this is a volume or a stack, not an image
MAX_DECODED_BYTES = 256 * 2**20  # all frames x pages x bands x pixels x bytes a header may declare


def _too_large(frames: int, w: int, h: int, channels: int, itemsize: int) -> FormatError | None:
    """The refusal for a file declaring more than ``MAX_DECODED_BYTES`` of pixels, else None."""
    total = frames * w * h * channels * itemsize
    if total <= MAX_DECODED_BYTES:
        return None
    what = f"{frames} frames of " if frames > 1 else ""
    bands = f" x {channels} channels" if channels > 1 else ""
    return FormatError(f"too large: {what}{w}x{h} pixels{bands} at {itemsize * 8} bits = {_bytes(total)} decoded "
                       f"(limit {_bytes(MAX_DECODED_BYTES)})")


def _bytes(n: float) -> str:
    """A byte count for people: 192 KiB, 2.9 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} B"


class FormatError(ValueError):
    """Raised with a short reason ("corrupt", "too large: ...", "unsupported DICOM: ...")."""


@dataclass(frozen=True)
class Info:
    """What a header says: channels, width, height and bits (8 or 16) of the decoded pixels."""

    channels: int
    width: int
    height: int
    bits: int


def to_carrier(a: np.ndarray) -> np.ndarray:
    """Any numeric image array -> uint8 or uint16, the same shape, keeping the precision it has.

    uint8 and uint16 pass; bool -> 0 / 255; other integers in 0..65535 -> uint16 as they are;
    floats in [0, 1] -> x 65535; anything else (negative or wider values) -> its own min..max
    stretched over 0..65535 (non-finite values count as the minimum).
    """
    if a.dtype in (np.uint8, np.uint16):
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    x = a.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, x[finite].min() if finite.any() else 0.0)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if a.dtype.kind in "ui" and lo >= 0 and hi <= 65535:
        return x.astype(np.uint16)
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return np.rint(x * 65535.0).astype(np.uint16)
    return np.rint((x - lo) * (65535.0 / max(hi - lo, 1e-12))).astype(np.uint16)


# ----------------------------------------------------------------------------- DICOM


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


_DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is zlib
_INFLATE_SLACK = 2**20  # room for the tags around the pixels of a deflated DICOM


def _check_inflation(data: bytes) -> None:
    """A deflated DICOM is inflated whole by pydicom, header reads included: count what it inflates
    to, in 16 MiB steps without keeping it, and refuse it past ``MAX_DECODED_BYTES`` (+ 1 MiB of tags)."""
    import zlib

    start = 132  # the file meta group (0002,xxxx) follows the preamble, always explicit VR little endian
    while start + 8 <= len(data) and data[start:start + 2] == b"\x02\x00":
        if data[start + 4:start + 6] in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            start += 12 + int.from_bytes(data[start + 8:start + 12], "little")
        else:
            start += 8 + int.from_bytes(data[start + 6:start + 8], "little")
    if _DEFLATED not in data[132:start]:
        return
    d, pending, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    limit = MAX_DECODED_BYTES + _INFLATE_SLACK
    try:
        while pending and total <= limit and not d.eof:
            out = len(d.decompress(pending, 16 * 2**20))
            total, pending = total + out, d.unconsumed_tail
            if out == 0:
                break
    except zlib.error as e:
        raise FormatError("corrupt: deflated DICOM does not inflate") from e
    if total > limit:
        raise FormatError(f"too large: deflated DICOM inflates past {_bytes(MAX_DECODED_BYTES)} "
                          f"({_bytes(len(data))} on disk)")


def _dataset(data: bytes, header_only: bool):
    import pydicom

    _check_inflation(data)
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=header_only)
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for a bad stream
        raise FormatError("corrupt") from e


def _first(value, default: float | None = None) -> float | None:
    """A DICOM number or the first of a multi-valued one (WindowCenter may list several windows)."""
    if value is None:
        return default
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return default


def dicom_info(data: bytes) -> Info:
    ds = _dataset(data, header_only=True)
    rows, cols = _int(ds.get("Rows", 0)), _int(ds.get("Columns", 0))
    if rows * cols <= 0:
        raise FormatError("corrupt: a DICOM without an image")
    if rows * cols > MAX_PIXELS:
        raise FormatError(f"too large: {cols}x{rows} pixels")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = max(_int(ds.get("NumberOfFrames", 1)), 1)
    bits = _int(ds.get("BitsAllocated", 16)) or 16
    error = _too_large(frames, cols, rows, max(samples, 1), max((bits + 7) // 8, 1))
    if error is not None:
        raise error
    return Info(3 if samples == 3 else 1, cols, rows, 16 if samples == 1 else 8)


def _int(value) -> int:
    """A DICOM integer tag (IS strings included) or 0 where it is not a number."""
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2) onto [0, 1]: center c, width w >= 1."""
    w = max(width, 1.0)
    return np.clip((x - (center - 0.5)) / max(w - 1.0, 1e-12) + 0.5, 0.0, 1.0)


def read_dicom(data: bytes) -> np.ndarray:
    """DICOM bytes -> (H, W, 1) uint16 windowed as the file says (module docstring), or (H, W, 3) RGB."""
    dicom_info(data)  # refuses huge images before the pixels are decoded
    ds = _dataset(data, header_only=False)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        from pydicom.pixels import apply_modality_lut, pixel_array

        arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array  # only the frame used
    except Exception as e:  # noqa: BLE001 - missing decoder, truncated pixel data...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "?")
        reason = "truncated" if "length" in str(e).lower() or "truncat" in str(e).lower() else "corrupt"
        raise FormatError(f"{reason}: DICOM pixel data not decodable ({name})") from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1 and arr.ndim == (4 if samples > 1 else 3):
        arr = arr[0]
    if samples == 3:
        return to_carrier(arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, -1))
    x = apply_modality_lut(arr, ds).astype(np.float64)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        y = window(x, center, width)
    else:
        lo, hi = float(x.min()), float(x.max())
        y = (x - lo) / max(hi - lo, 1e-12)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        y = 1.0 - y
    return np.rint(y * 65535.0).astype(np.uint16)[..., None]


# ----------------------------------------------------------------------------- TIFF

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_CHANNEL_AXES = "CSQI"  # tifffile's names for channels, samples and unnamed pages


def is_tiff(data: bytes) -> bool:
    return data[:4] in _TIFF_MAGIC


def _tiff_layout(tif) -> tuple[tuple[int, ...], str, np.dtype, int, int, list[int]]:
    """(shape, axes, dtype, photometric, channels, alpha sample indices) of the first series."""
    series = tif.series[0]
    page = tif.pages[0]
    shape, axes = tuple(series.shape), series.axes
    alpha = [i for i, e in enumerate(getattr(page, "extrasamples", ()) or ()) if int(e) in (1, 2)]
    channels = 1
    for n, ax in zip(shape, axes, strict=True):
        if ax in _CHANNEL_AXES:
            channels *= n
    n_samples = int(getattr(page, "samplesperpixel", 1) or 1)
    alpha = [n_samples - len(alpha) + i for i in range(len(alpha))]  # extra samples come last
    return shape, axes, series.dtype, int(page.photometric), channels - len(alpha), alpha


def tiff_wants_tifffile(data: bytes) -> bool:
    """True for what PIL would lose: grey or RGB TIFFs deeper than 8 bits, or with other than 1 or
    3 channels (alpha aside). False for plain 8-bit images, palettes, CMYK, YCbCr (PIL reads them)."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _, _, dtype, photometric, channels, _ = _tiff_layout(tif)
    except Exception:  # noqa: BLE001 - let PIL have a try and name the failure
        return False
    plain = np.dtype(dtype) in (np.uint8, np.bool_) and channels in (1, 3)
    return photometric in (0, 1, 2) and not plain  # MINISWHITE, MINISBLACK, RGB


def _check_tiff_total(tif) -> None:
    """Refuse a TIFF whose first series (every frame, page and band) decodes past ``MAX_DECODED_BYTES``."""
    series = tif.series[0]
    shape, axes = tuple(series.shape), series.axes
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    rest = int(np.prod(shape, dtype=np.float64)) // max(h * w, 1)
    channels = int(np.prod([n for n, ax in zip(shape, axes, strict=True) if ax in _CHANNEL_AXES], dtype=np.float64))
    error = _too_large(max(rest // max(channels, 1), 1), w, h, max(channels, 1), np.dtype(series.dtype).itemsize)
    if error is not None:
        raise error


def tiff_size_check(data: bytes) -> None:
    """The total-size refusal alone, for the TIFFs PIL decodes (a header tifffile cannot read passes here)."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _check_tiff_total(tif)
    except FormatError:
        raise
    except Exception:  # noqa: BLE001 - PIL names the failure
        return


def tiff_info(data: bytes) -> Info:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            shape, axes, dtype, _, channels, _ = _tiff_layout(tif)
            h, w = shape[axes.index("Y")], shape[axes.index("X")]
            if h * w > MAX_PIXELS:
                raise FormatError(f"too large: {w}x{h} pixels")
            if channels > MAX_CHANNELS:
                raise FormatError(f"too large: {channels} channels")
            _check_tiff_total(tif)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001
        raise FormatError("corrupt") from e
    return Info(channels, w, h, 8 if np.dtype(dtype) in (np.uint8, np.bool_) else 16)


def _first_frame(tif) -> tuple[np.ndarray, str]:
    """The pages of the first series at index 0 of every axis that is not a channel (Z, T...), all
    channel pages kept: (array, its axes), unsqueezed; the other frames are never decoded."""
    series = tif.series[0]
    shape, axes = tuple(series.get_shape(False)), series.get_axes(False)
    n_pages = len(series.pages)
    if n_pages <= 1:
        return series.asarray().reshape(shape), axes
    lead, count = 0, 1
    while count < n_pages and lead < len(shape):
        count *= shape[lead]
        lead += 1
    if count != n_pages:  # an odd layout: decode the series (its total was checked)
        return series.asarray().reshape(shape), axes
    grid = [range(n) if ax in _CHANNEL_AXES else range(1) for n, ax in zip(shape[:lead], axes[:lead], strict=True)]
    index = np.ravel_multi_index(np.stack(np.meshgrid(*grid, indexing="ij")).reshape(lead, -1), shape[:lead])
    pages = tif.asarray(key=[int(i) for i in index], series=0)
    kept = tuple(len(g) for g in grid) + shape[lead:]
    return pages.reshape(kept), axes


def read_tiff(data: bytes) -> np.ndarray:
    """TIFF bytes -> (H, W, C) uint8 or uint16: channel axes gathered last, other axes (Z, T...)
    at their first index (only that frame is decoded), alpha dropped, MINISWHITE inverted
    (``to_carrier`` for the depth)."""
    import tifffile

    tiff_info(data)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            _, _, _, photometric, _, alpha = _tiff_layout(tif)
            a, axes = _first_frame(tif)
    except Exception as e:  # noqa: BLE001
        short = any(w in str(e).lower() for w in ("truncat", "failed to read", "end of file"))
        raise FormatError("truncated" if short else "corrupt") from e
    keep = [ax for ax in axes if ax in _CHANNEL_AXES or ax in "YX"]
    a = a[tuple(slice(None) if ax in keep else 0 for ax in axes)]
    chan = [i for i, ax in enumerate(keep) if ax in _CHANNEL_AXES]
    order = [keep.index("Y"), keep.index("X"), *chan]
    a = np.transpose(a, order).reshape(a.shape[order[0]], a.shape[order[1]], -1)
    if alpha:
        a = np.delete(a, alpha, axis=-1)
    if photometric == 0:  # MINISWHITE: 0 is white
        a = (np.iinfo(a.dtype).max - a) if a.dtype.kind == "u" else a.max() - a
    return to_carrier(a)


__all__ = ["FormatError", "Info", "dicom_info", "is_dicom", "is_tiff", "read_dicom", "read_tiff", "tiff_info",
           "tiff_size_check", "tiff_wants_tifffile", "to_carrier", "window"]
