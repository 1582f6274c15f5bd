"""Decompression bombs (issue 23): multi-frame TIFF and DICOM, deflated DICOM and compressed npz
members are refused from their headers before anything big is decoded; of a multi-frame file only
the frame used is decoded. Every hostile file is small: the sizes are declared, not written."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from selfsup.data import SkipCounter, SourceError, open_source
from selfsup.data import formats as formats_mod
from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.sources import npz as npz_mod
from selfsup.data.sources.npz import npz_members

RNG = np.random.default_rng(23)


def tiff_frames(frames: np.ndarray, axes: str, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, frames, photometric="minisblack", metadata={"axes": axes}, **kw)
    return buf.getvalue()


def dicom_frames(frames: np.ndarray, deflated: bool = False) -> bytes:
    """A DICOM holding ``frames`` (N, H, W) uint16, explicit VR (or deflated) little endian."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, (ds.Rows, ds.Columns), ds.SamplesPerPixel = "CT", frames.shape[1:], 1
    ds.NumberOfFrames = frames.shape[0]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = frames.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --- TIFF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", ["TYX", "ZYX", "IYX"])
def test_multi_frame_tiff_bomb_is_refused_from_its_header(monkeypatch, axes: str):
    """24 frames of 64x64 16-bit (192 KiB decoded) against a 128 KiB cap: each frame alone is small,
    the file is not (the issue's bomb: 24 frames of 8000x8000, 3 GB decoded from 3.3 MB)."""
    data = tiff_frames(np.zeros((24, 64, 64), np.uint16), axes, compression="zlib")
    monkeypatch.setattr(formats_mod, "MAX_DECODED_BYTES", 128 * 2**10)
    said = r"too large: (24 frames of )?64x64 pixels( x 24 channels)? at 16 bits = 192 KiB decoded \(limit 128 KiB\)"
    with pytest.raises(DecodeError, match=said):
        decode_image(data, 1, 16)
    monkeypatch.setattr(formats_mod, "MAX_DECODED_BYTES", 256 * 2**10)
    assert decode_image(data, 1, 16).shape == (1, 16, 16)


def test_multi_frame_tiff_decodes_only_the_first_frame():
    """Frames after the first are garbage: the file still reads, as its first frame, bit for bit
    (decoding every frame, as before, fails on the damaged ones)."""
    frames = RNG.integers(0, 65535, (6, 16, 16)).astype(np.uint16)
    data = bytearray(tiff_frames(frames, "TYX", compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        spans = [(p.dataoffsets[0], p.databytecounts[0]) for p in tif.pages[1:]]
    for offset, count in spans:
        data[offset:offset + count] = b"\xff" * count
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif, pytest.raises(Exception):  # noqa: B017
        tif.series[0].asarray()  # the old read: every frame
    x = decode_image(bytes(data), 1, 16)
    assert np.array_equal(x[0].numpy().astype(np.uint16), frames[0])


def test_channel_pages_are_all_read_and_other_axes_at_their_first_index():
    """A T x C hyperstack: the first time point, every channel."""
    stack = RNG.integers(0, 65535, (3, 4, 8, 8)).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, stack, imagej=True, metadata={"axes": "TCYX"})
    x = decode_image(buf.getvalue(), 4, 8)
    assert np.array_equal(x.numpy().astype(np.uint16), stack[0])


def test_tiff_bomb_in_a_folder_is_skipped_and_counted(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(formats_mod, "MAX_DECODED_BYTES", 128 * 2**10)
    for i in range(3):
        (tmp_path / f"ok{i}.tif").write_bytes(tiff_frames(RNG.integers(0, 65535, (16, 16)).astype(np.uint16), "YX"))
    (tmp_path / "bomb.tif").write_bytes(tiff_frames(np.zeros((24, 64, 64), np.uint16), "TYX", compression="zlib"))
    skips, keys = SkipCounter(), []
    for batch in open_source(str(tmp_path), image_size=16, channels=1).loader(2):
        keys += batch["key"]
        skips.add(batch)
    assert sorted(keys) == ["ok0.tif", "ok1.tif", "ok2.tif"] and skips.by_reason == {"too large": 1}


# --- DICOM ---------------------------------------------------------------------------------------


def test_multi_frame_dicom_bomb_is_refused_from_its_header(monkeypatch):
    frames = RNG.integers(0, 65535, (16, 32, 32)).astype(np.uint16)  # 32 KiB decoded
    data = dicom_frames(frames)
    monkeypatch.setattr(formats_mod, "MAX_DECODED_BYTES", 16 * 2**10)
    with pytest.raises(DecodeError, match=r"too large: 16 frames of 32x32"):
        decode_image(data, 1, 32)
    monkeypatch.undo()
    x = decode_image(data, 1, 32)  # under the cap: the first frame, min..max scaled
    f = frames[0].astype(np.float64)
    want = np.rint((f - f.min()) / (f.max() - f.min()) * 65535)
    assert np.array_equal(x[0].numpy().astype(np.float64), want)


def test_multi_frame_dicom_decodes_only_the_first_frame(monkeypatch):
    """pydicom is asked for frame 0 only: a spy on its decoder sees index 0, never the whole volume."""
    import pydicom.pixels

    seen = []
    real = pydicom.pixels.pixel_array

    def spy(src, **kw):
        seen.append(kw.get("index"))
        return real(src, **kw)

    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    x = decode_image(dicom_frames(RNG.integers(0, 65535, (5, 8, 8)).astype(np.uint16)), 1, 8)
    assert x.shape == (1, 8, 8) and seen == [0]


def test_deflated_dicom_bomb_is_refused_without_inflating_it(monkeypatch):
    """A deflated DICOM is inflated whole by pydicom before any tag is read: its inflated size is
    counted first, in bounded steps, and refused past the cap."""
    data = dicom_frames(np.zeros((4, 64, 64), np.uint16), deflated=True)  # 32 KiB inflated, ~0.3 KiB stored
    assert len(data) < 2000
    monkeypatch.setattr(formats_mod, "MAX_DECODED_BYTES", 8 * 2**10)
    monkeypatch.setattr(formats_mod, "_INFLATE_SLACK", 0)
    with pytest.raises(DecodeError, match="too large: deflated DICOM inflates past"):
        decode_image(data, 1, 16)
    monkeypatch.undo()
    assert decode_image(data, 1, 16).shape == (1, 16, 16)


# --- npz -----------------------------------------------------------------------------------------


def forged_npz(path: Path, name: str, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> Path:
    """An .npz whose member ``name`` has an .npy header declaring ``shape`` float64 over a short payload."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name + ".npy", head.getvalue() + payload)
        z.writestr("labels.npy", _npy(np.zeros(4, np.int64)))
    return path


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["images", "X", "series"])
def test_npz_member_declaring_931_gib_is_refused_in_one_line(tmp_path: Path, name: str):
    """The issue's second npz: a header declaring 931 GiB ended in numpy's _ArrayMemoryError traceback."""
    path = forged_npz(tmp_path / "forged.npz", name, (1000, 1000, 125_000) if name != "X" else (1_000_000, 125_000))
    with pytest.raises(SourceError, match=r"declares .* = 931\.3 GiB but the file holds") as err:
        open_source(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["images", "X", "series"])
def test_compressed_npz_bomb_is_refused_before_inflating(tmp_path: Path, monkeypatch, name: str):
    """savez_compressed of zeros: 4 MiB declared, a few KiB stored; over a 1 MiB cap it is refused
    from the headers (the issue's: 10.9 MB declaring 2.5 GB, loaded in full at 2.9 GB RSS)."""
    shape = {"images": (1024, 64, 64), "X": (4096, 128), "series": (64, 2, 4096)}[name]
    arrays = {name: np.zeros(shape, np.float64 if name != "images" else np.uint8), "labels": np.arange(shape[0]) % 2}
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000
    monkeypatch.setattr(npz_mod, "MAX_NPZ_INFLATE", 2**20)
    with pytest.raises(SourceError, match=r"compressed arrays inflate to .* over the 1\.0 MiB read into memory"):
        open_source(str(tmp_path / "bomb.npz"))
    monkeypatch.undo()
    assert open_source(str(tmp_path / "bomb.npz")) is not None  # under the cap it reads


def test_npz_members_reads_headers_only(tmp_path: Path):
    np.savez_compressed(tmp_path / "a.npz", x=np.zeros((3, 5), np.float32), y=np.arange(3))
    m = npz_members(tmp_path / "a.npz")
    assert m["x"].shape == (3, 5) and m["x"].dtype == np.float32 and m["x"].compressed and m["x"].nbytes == 60
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(SourceError, match="not a readable .npz"):
        npz_members(tmp_path / "b.npz")
