"""Real-world image inputs: DICOM with windowing, 16-bit PNG/TIFF kept at 16 bits, n-channel TIFF
and npz, odd sizes; decoded right, then through pretraining, evaluation and anomaly detection."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from selfsup import api
from selfsup.data import formats as formats_mod
from selfsup.data import open_source
from selfsup.data.decode import DecodeError, convert_channels, decode_image, image_info
from selfsup.data.spec import to_bits, to_float
from selfsup.encoders.sizing import check_size, resolve_geometry

TINY = ["data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=2", "encoder.heads=2",
        "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1", "method.decoder_heads=2",
        "train.batch_size=4", "train.accelerator=cpu"]
RNG = np.random.default_rng(0)


def dicom(arr: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> bytes:
    """A DICOM Part 10 file (explicit VR little endian) holding ``arr`` (H, W) int16/uint16 and ``tags``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, (ds.Rows, ds.Columns), ds.SamplesPerPixel = "CT", arr.shape, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(arr.dtype == np.int16)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def tiff(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


# --- decoding ------------------------------------------------------------------------------------


def test_dicom_windowing_rescale_and_monochrome1():
    raw = (np.arange(64, dtype=np.int16).reshape(8, 8) * 20 - 600)
    hu = raw * 2.0 - 1000.0  # RescaleSlope 2, RescaleIntercept -1000
    data = dicom(raw, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=-700, WindowWidth=800)
    x = decode_image(data, 1, 8)
    want = np.clip((hu - (-700 - 0.5)) / (800 - 1) + 0.5, 0, 1)  # DICOM PS3.3 C.11.2.1.2
    assert x.dtype == torch.uint16 and x.shape == (1, 8, 8)
    assert np.abs(to_float(x)[0].numpy() - want).max() < 1e-4
    inverted = decode_image(dicom(raw, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000,
                                  WindowCenter=-700, WindowWidth=800), 1, 8)
    assert torch.equal(inverted.int(), 65535 - x.int())  # bright means dense either way
    several = decode_image(dicom(raw, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=[-700, 40],
                                 WindowWidth=[800, 400]), 1, 8)
    assert torch.equal(several, x)  # the first of several windows
    plain = to_float(decode_image(dicom(raw), 1, 8))[0].numpy()  # no window: the image's own range
    assert abs(plain.min()) < 1e-6 and abs(plain.max() - 1) < 1e-6
    assert image_info(data) == (1, 8, 8, 16)


def test_dicom_bomb_and_garbage_are_refused_by_reason(monkeypatch):
    monkeypatch.setattr(formats_mod, "MAX_PIXELS", 100)
    with pytest.raises(DecodeError, match="too large"):
        decode_image(dicom(np.zeros((16, 16), np.uint16)), 1, 8)
    monkeypatch.undo()
    data = dicom(np.zeros((16, 16), np.uint16))
    with pytest.raises(DecodeError, match="corrupt|truncated"):
        decode_image(data[: len(data) - 100], 1, 8)


def test_sixteen_bit_png_and_tiff_keep_their_precision():
    levels = np.array([[1000, 1001, 1002, 1003]] * 4, np.uint16)  # one 8-bit step is 257 of these
    for data in (png16(levels), tiff(levels)):
        x = decode_image(data, 1, 4)
        assert x.dtype == torch.uint16 and torch.equal(x[0].int(), torch.from_numpy(levels.astype(np.int32)))
        f = to_float(x)[0, 0]
        assert len(set(f.tolist())) == 4 and abs(float(f[0]) - 1000 / 65535) < 1e-7  # an 8-bit path merges them
    rgb16 = RNG.integers(0, 65535, (6, 6, 3)).astype(np.uint16)
    x = decode_image(tiff(rgb16, photometric="rgb"), 3, 6)
    assert x.dtype == torch.uint16 and torch.equal(x.permute(1, 2, 0).int(), torch.from_numpy(rgb16.astype(np.int32)))
    assert to_bits(to_bits(x, 8), 16).dtype == torch.uint16 and to_bits(x, 8).dtype == torch.uint8
    f32 = RNG.random((6, 6)).astype(np.float32)
    assert decode_image(tiff(f32), 1, 6).dtype == torch.uint16  # float TIFFs: 16 bits too


def test_multispectral_tiff_keeps_every_band():
    bands = RNG.integers(0, 65535, (5, 10, 10)).astype(np.uint16)
    for data in (tiff(bands, photometric="minisblack", planarconfig="separate"),
                 tiff(bands.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig")):
        assert image_info(data) == (5, 10, 10, 16)
        x = decode_image(data, 5, 10)
        assert x.shape == (5, 10, 10) and torch.equal(x.int(), torch.from_numpy(bands.astype(np.int32)))
    with pytest.raises(DecodeError, match="has 5 channels; this run reads 4"):
        decode_image(data, 4, 10)
    assert convert_channels(torch.zeros(2, 5, 3, 3, dtype=torch.uint16), 3).shape == (2, 3, 3, 3)


def test_npz_with_five_channels_in_either_layout(tmp_path: Path):
    x = RNG.integers(0, 255, (6, 12, 12, 5)).astype(np.uint8)
    for name, arr in (("hwc", x), ("chw", x.transpose(0, 3, 1, 2))):
        np.savez(tmp_path / f"{name}.npz", images=arr, labels=np.arange(6) % 2)
        src = open_source(str(tmp_path / f"{name}.npz"))
        imgs, _ = src.arrays()
        assert src.spec.channels == 5 and imgs.shape == (6, 5, 12, 12)
        assert np.array_equal(imgs, x.transpose(0, 3, 1, 2))


# --- sizes ---------------------------------------------------------------------------------------


def test_default_sizes_are_valid_for_the_model_and_sized_to_the_machine():
    tile = resolve_geometry(213, 1, width=192)
    assert (tile.image_size, tile.patch_size) == (64, 8) and "8x8 patches" in tile.why  # not 2,800 tokens
    cifar = resolve_geometry(32, 3, width=128)  # CPU: the larger patch that keeps 4x4 (16 tokens)
    assert (cifar.image_size, cifar.patch_size) == (32, 8)
    assert (resolve_geometry(32, 3, width=768, gpu=True).patch_size) == 4  # GPU: more tokens
    assert (resolve_geometry(28, 1, width=128).image_size, resolve_geometry(28, 1, width=128).patch_size) == (28, 4)
    assert (resolve_geometry(8, 1, width=128).image_size, resolve_geometry(8, 1, width=128).patch_size) == (8, 4)
    gpu = resolve_geometry(500, 3, width=768, gpu=True)
    assert (gpu.image_size, gpu.patch_size) == (224, 16)  # ViT-B/16 at 224 px
    assert resolve_geometry(213, 1, patch_size=4).image_size == 32  # a set patch: the side follows it
    assert resolve_geometry(213, 3, image_size=64, patch_size=8).image_size == 64
    with pytest.raises(ValueError, match="data.image_size=213 is not a multiple of the patch size 4: use 212 or 216"):
        check_size(213, 4)


def test_pretrain_on_odd_sized_images_chooses_a_valid_size_and_writes_it(tmp_path: Path):
    data = tmp_path / "tiles"
    data.mkdir()
    for i in range(6):
        Image.fromarray(RNG.integers(0, 255, (300, 213), dtype=np.uint8)).save(data / f"{i}.png")
    lines: list[str] = []
    run = api.pretrain(str(data), "mae", out=tmp_path / "run", steps=1, log=lines.append,
                       overrides=["data.num_workers=0", "train.batch_size=4", "encoder.depth=1"])
    cfg = api.load_run_config(run)
    assert (cfg.data.image_size, cfg.encoder.patch_size) == (64, 8)
    assert any("image size 64 px, patch 8" in line for line in lines)
    # no network size set beyond the depth: the network is the machine's default only when nothing was set
    assert cfg.encoder.size == "tiny" and cfg.encoder.depth == 1


def test_pretrain_sizes_the_network_to_the_machine_when_nothing_is_set(tmp_path: Path):
    lines: list[str] = []
    run = api.pretrain("digits:train", "mae", out=tmp_path / "run", steps=1, log=lines.append,
                       overrides=["data.num_workers=0", "train.batch_size=4"])
    cfg = api.load_run_config(run)
    assert (cfg.encoder.width, cfg.encoder.depth, cfg.encoder.heads) == (128, 4, 4)  # written into config.yaml
    assert any("CPU default" in line for line in lines)


# --- through pretraining, evaluation and anomaly detection ---------------------------------------


def write_images(folder: Path, kind: str, n: int, seed: int) -> None:
    """``n`` 16x16 images of ``kind``, with a bright square for half of them (seed 1) as a 'defect'."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.normal(0.4, 0.05, (16, 16, 5 if kind == "tiff5" else 1)).clip(0, 1)
        if seed == 1:
            base[4:10, 4:10] = 1.0
        u16 = (base * 65535).astype(np.uint16)
        if kind == "dicom":
            (folder / f"{i}.dcm").write_bytes(dicom(u16[..., 0], WindowCenter=30000, WindowWidth=60000))
        elif kind == "png16":
            (folder / f"{i}.png").write_bytes(png16(u16[..., 0]))
        else:
            (folder / f"{i}.tif").write_bytes(tiff(u16, photometric="minisblack", planarconfig="contig"))


@pytest.mark.parametrize("kind", ["dicom", "png16", "tiff5"])
def test_formats_flow_through_pretraining_evaluation_and_anomaly(tmp_path: Path, kind: str):
    channels = 5 if kind == "tiff5" else 1
    for split, n, seed in (("train/good", 8, 0), ("test/good", 4, 2), ("test/bright", 4, 1)):
        write_images(tmp_path / "tiles" / split, kind, n, seed)
    src = open_source(str(tmp_path / "tiles" / "train" / "good"))
    assert src.bits == 16 and src.spec.channels == channels
    batch = next(iter(src.loader(4)))
    assert batch["image"].dtype == torch.uint16 and batch["image"].shape[1] == channels
    run = api.pretrain(str(tmp_path / "tiles" / "train" / "good"), "mae", overrides=TINY, out=tmp_path / "run",
                       steps=2, log=lambda m: None)
    assert api.load_encoder(run)[1].channels == channels
    recs = api.evaluate(run, str(tmp_path / "tiles" / "test"), protocols=["knn", "finetune"], baselines=["raw"],
                        shots=[1], seeds=1, finetune_seeds=1, log=lambda m: None)
    assert {(r["protocol"], r["encoder"]) for r in recs} >= {("knn", "ssl"), ("finetune", "ssl"), ("knn", "raw")}
    api.anomaly_fit(run, str(tmp_path / "tiles"), log=lambda m: None)
    recs = api.anomaly_score(run / "anomaly", str(tmp_path / "tiles"), log=lambda m: None)  # + report.html
    auroc = {r["metric"]: r["mean"] for r in recs if r["defect"] == "all"}
    assert 0.0 <= auroc["image_auroc"] <= 1.0 and (run / "anomaly" / "heatmaps" / "bright.png").is_file()
    assert (run / "report.html").is_file()  # figures of uint16 and 5-channel images
    assert api.report(run, data=str(tmp_path / "tiles" / "test"), log=lambda m: None).is_file()
