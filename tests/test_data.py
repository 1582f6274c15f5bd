"""Data layer: every --data form, safe decoding, skip counting, worker splits. Tiny files in tmp_path."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import threading
import wave
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import SkipCounter, SourceError, collate, describe_sources, open_source
from selfsup.data import decode as decode_mod
from selfsup.data.decode import DecodeError, decode_image, decode_wav

DATA = Path(__file__).parents[1].parent / "shared" / "data"
RNG = np.random.default_rng(0)


def encode(mode: str = "RGB", size: tuple[int, int] = (20, 16), fmt: str = "PNG", value: int = -1) -> bytes:
    """A random image of `mode` encoded as `fmt`; I;16 images can be one `value`."""
    w, h = size
    if mode == "I;16":
        a = np.full((h, w), value) if value >= 0 else RNG.integers(0, 65535, (h, w))
        img = Image.fromarray(a.astype(np.uint16))
    else:
        img = Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


BAD = {"corrupt": b"this is not an image", "empty": b"", "truncated": encode(fmt="JPEG", size=(64, 64))[:300]}


def write_tar(path: Path, samples: list[dict[str, bytes]], gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for s in samples:
            for ext, data in s.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def image_samples(prefix: str, n: int, bad: dict[str, bytes] | None = None) -> list[dict[str, bytes]]:
    out = [{"__key__": f"{prefix}{i:03d}", "jpg": encode(fmt="JPEG"), "cls": b"%d" % (i % 3)}
           for i in range(n)]
    for reason, data in (bad or {}).items():
        out.append({"__key__": f"{prefix}{reason}", "jpg": data, "cls": b"0"})
    return out


def keys_and_skips(loader) -> tuple[list[str], SkipCounter]:
    keys, skips = [], SkipCounter()
    for batch in loader:
        keys += batch["key"]
        skips.add(batch)
    return keys, skips


# --- decode ------------------------------------------------------------------------------------


def test_decode_modes_and_resize():
    for mode in ("L", "RGB", "RGBA", "LA", "P", "CMYK", "I;16"):
        fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "LA" else "PNG"
        for ch in (1, 3):
            x = decode_image(encode(mode, (20, 16), fmt), ch, 8)
            want = torch.uint16 if mode == "I;16" else torch.uint8  # 16-bit stays 16-bit until to_float
            assert x.shape == (ch, 8, 8) and x.dtype == want, mode
            assert decode_image(encode(mode, (20, 16), fmt), ch, 8, bits=8).dtype == torch.uint8
    # fully transparent white -> black; 16-bit full scale -> 65535, or 255 at 8 bits
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert decode_image(buf.getvalue(), 3, 4).max() == 0
    assert decode_image(encode("I;16", (4, 4), value=65535), 1, 4).int().min() == 65535
    assert decode_image(encode("I;16", (4, 4), value=65535), 1, 4, bits=8).min() == 255


def test_decode_failures_have_reasons(monkeypatch):
    for reason, data in BAD.items():
        with pytest.raises(DecodeError, match=reason):
            decode_image(data, 3, 8)
    monkeypatch.setattr(decode_mod, "MAX_PIXELS", 100)
    with pytest.raises(DecodeError, match="too large"):
        decode_image(encode(size=(20, 20)), 3, 8)


def test_decode_wav():
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.array([[16384, -16384]] * 10, "<i2").tobytes())
    audio, rate = decode_wav(buf.getvalue())
    assert rate == 8000 and audio.shape == (10,) and audio.dtype == torch.float32 and audio.abs().max() == 0
    with pytest.raises(DecodeError):
        decode_wav(b"RIFFjunk")


# --- image folders -----------------------------------------------------------------------------


def test_labelled_folder_skips_bad_files_and_counts_them(tmp_path):
    for c, n in (("cat", 3), ("dog", 2)):
        (tmp_path / c).mkdir()
        for i in range(n):
            (tmp_path / c / f"{i}.png").write_bytes(encode("RGBA" if i else "RGB", (24, 16)))
    for reason, data in BAD.items():
        (tmp_path / "dog" / f"bad_{reason}.jpg").write_bytes(data)
    (tmp_path / "dog" / "notes.txt").write_text("not an image file, not listed")
    src = open_source(str(tmp_path), image_size=12)
    assert src.num_samples == len(src) == 8 and src.spec.class_names == ["cat", "dog"]
    assert src.spec.channels == 3 and src.spec.num_classes == 2
    images, labels, keys, skips = [], [], [], SkipCounter()
    for batch in src.loader(3, shuffle=True):
        images.append(batch["image"])
        labels += batch["label"].tolist()
        keys += batch["key"]
        skips.add(batch)
    assert torch.cat(images).shape == (5, 3, 12, 12)
    assert sorted(labels) == [0, 0, 0, 1, 1] and "cat/0.png" in keys
    assert skips.total == 3 and skips.by_reason == {"corrupt": 1, "empty": 1, "truncated": 1}
    assert skips.summary().startswith("skipped 3 samples (")
    x, y = src.arrays(4)
    assert x.shape[1:] == (3, 12, 12) and len(x) <= 4 and x.dtype == np.uint8 and y.dtype == np.int64


def test_flat_folder_is_recursive_unlabelled_and_infers_grey(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "x.png").write_bytes(encode("L", (30, 20)))
    (tmp_path / "a" / "y.jpeg").write_bytes(encode("L", (20, 30), "JPEG"))
    (tmp_path / "a" / "b" / "z.bmp").write_bytes(encode("L", (20, 20), "BMP"))
    src = open_source(str(tmp_path))
    assert src.spec.channels == 1 and src.spec.image_size == 20 and src.spec.class_names is None
    x, y = src.arrays()
    assert x.shape == (3, 1, 20, 20) and (y == -1).all()
    assert open_source(str(tmp_path), channels=3, image_size=7).arrays()[0].shape == (3, 3, 7, 7)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(SourceError, match="no_such_dir"):
        open_source(str(tmp_path / "no_such_dir"))
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path))
    with pytest.raises(SourceError, match="digits"):
        open_source("imagenet21k")
    with pytest.raises(SourceError, match="no files match"):
        open_source(str(tmp_path / "train-*.tar.gz"))
    write_tar(tmp_path / "train-000000.tar", image_samples("k", 1))
    with pytest.raises(SourceError, match="train-000001.tar: no such file"):
        open_source(str(tmp_path / "train-{000000..000001}.tar"))


# --- shards ------------------------------------------------------------------------------------


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Three gzipped shards of 5 good samples; the last also holds one corrupt, truncated, empty image."""
    for s in range(3):
        write_tar(tmp_path / f"train-{s:06d}.tar.gz", image_samples(f"s{s}_", 5, BAD if s == 2 else None))
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    return tmp_path


def test_shard_forms_expand_and_skip_exactly(shards):
    for spec in (
        f"{shards}/train-{{000000..000002}}.tar.gz",
        f"{shards}/train-*.tar.gz",
        str(shards),
    ):
        src = open_source(spec)
        assert len(src.shards) == 3 and src.num_samples is None and src.name == shards.name
        assert src.spec.class_names == ["a", "b", "c"] and (src.spec.image_size, src.spec.channels) == (16, 3)
        keys, skips = keys_and_skips(src.loader(4))
        assert len(keys) == len(set(keys)) == 15
        assert skips.by_reason == {"corrupt": 1, "empty": 1, "truncated": 1}
    one = open_source(f"{shards}/train-000001.tar.gz", image_size=8, channels=1)
    batch = next(iter(one.loader(5)))
    assert batch["image"].shape == (5, 1, 8, 8) and batch["label"].tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(TypeError):
        len(one)


def test_broken_shard_is_skipped_not_fatal(shards):
    data = (shards / "train-000000.tar.gz").read_bytes()
    (shards / "train-000000.tar.gz").write_bytes(data[: len(data) // 2])
    keys, skips = keys_and_skips(open_source(f"{shards}/train-{{000000..000001}}.tar.gz").loader(4))
    assert 5 <= len(keys) < 10 and len(set(keys)) == len(keys)
    assert skips.by_reason == {"unreadable shard": 1}


def test_worker_split_loses_and_duplicates_nothing(shards, tmp_path):
    single = write_tar(tmp_path / "single.tar", image_samples("q", 7), gz=False)
    for spec, n in ((f"{shards}/train-*.tar.gz", 15), (str(single), 7)):  # 3 shards >= 2 workers; 1 < 2
        keys, skips = keys_and_skips(open_source(spec).loader(2, num_workers=2, shuffle=True))
        assert len(keys) == n and len(set(keys)) == n
        assert skips.total == (3 if n == 15 else 0)


def test_shuffle_and_infinite(shards):
    src = open_source(f"{shards}/train-{{000000..000001}}.tar.gz")
    plain = keys_and_skips(src.loader(10))[0]
    mixed = keys_and_skips(src.loader(10, shuffle=True, seed=1))[0]
    assert sorted(plain) == sorted(mixed) and plain != mixed
    endless = iter(src.loader(4, shuffle=True, infinite=True))
    seen = Counter(k for _ in range(8) for k in next(endless)["key"])  # 32 samples > one pass of 10
    assert sum(seen.values()) == 32 and set(seen) == set(plain)
    digits = iter(open_source("digits:test").loader(512, shuffle=True, infinite=True))
    assert sum(len(next(digits)["key"]) for _ in range(3)) == 1536


def test_caption_shards_yield_text(tmp_path):
    caps = [["a dog runs", "a brown dog"], ["two cats", "cats on a sofa"]]
    samples = [{"__key__": f"k{i}", "jpg": encode(fmt="JPEG"), "json": json.dumps({"captions": c}).encode()}
               for i, c in enumerate(caps)]
    src = open_source(str(write_tar(tmp_path / "caps.tar.gz", samples)))
    assert src.spec.modality == "image_text"
    batch = next(iter(src.loader(2)))
    assert batch["text"] == ["a dog runs", "two cats"] and batch["captions"] == caps
    assert batch["label"].tolist() == [-1, -1]
    picked = {t for _ in range(10) for t in next(iter(src.loader(2, shuffle=True, seed=_)))["text"]}
    assert picked <= {c for cs in caps for c in cs} and len(picked) > 2


def test_audio_shards(tmp_path):
    def wav(n: int) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(np.zeros(n, "<i2").tobytes())
        return buf.getvalue()

    meta = b'{"text": "seven"}'
    samples = [{"__key__": f"a{i}", "wav": wav(100 + i), "cls": b"7", "json": meta} for i in range(3)]
    samples.append({"__key__": "broken", "wav": b"RIFF", "cls": b"7", "json": meta})
    src = open_source(str(write_tar(tmp_path / "audio.tar", samples, gz=False)))
    assert src.spec.modality == "audio_text" and src.spec.sample_rate == 8000
    batch = next(iter(src.loader(4)))
    assert batch["audio"].shape == (3, 102) and batch["audio_length"].tolist() == [100, 101, 102]
    assert batch["text"] == ["seven"] * 3 and batch["label"].tolist() == [7] * 3
    assert batch["skipped"] == ["broken: truncated"]


def test_http_shards(shards):
    handler = partial(SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/train-{{000000..000001}}.tar.gz"
        src = open_source(url)
        assert src.spec.class_names == ["a", "b", "c"]
        assert len(keys_and_skips(src.loader(4))[0]) == 10
    finally:
        server.shutdown()
        server.server_close()


# --- arrays: npz and built-ins -----------------------------------------------------------------


def test_npz_forms(tmp_path):
    grey = RNG.integers(0, 255, (6, 10, 10), dtype=np.uint8)
    np.savez(tmp_path / "plain.npz", images=grey, labels=np.arange(6).reshape(6, 1))
    rgb = RNG.random((4, 12, 12, 3)).astype(np.float32)
    np.savez_compressed(tmp_path / "split.npz", train_images=rgb, train_labels=np.ones(4),
                        test_images=rgb[:2])
    plain = open_source(str(tmp_path / "plain.npz"))
    assert isinstance(plain.images, np.memmap)  # uncompressed arrays are memory-mapped
    x, y = plain.arrays()
    assert np.array_equal(x[:, 0], grey) and y.tolist() == list(range(6)) and plain.spec.num_classes == 6
    train = open_source(f"{tmp_path}/split.npz:train", image_size=6, channels=1)
    x, y = train.arrays()
    assert x.shape == (4, 1, 6, 6) and (y == 1).all()
    x = open_source(f"{tmp_path}/split.npz:test").arrays()[0]
    # floats in [0, 1] keep 16 bits of precision: uint16, x 65535
    assert x.shape == (2, 3, 12, 12) and x.dtype == np.uint16
    assert abs(int(x[0, 0, 0, 0]) - round(float(rgb[0, 0, 0, 0]) * 65535)) <= 1
    keyed = open_source(str(tmp_path / "split.npz"), images_key="test_images")
    assert keyed.num_samples == 2 and (keyed.arrays()[1] == -1).all()
    with pytest.raises(SourceError, match="split.npz:SPLIT"):
        open_source(str(tmp_path / "split.npz"))


def test_digits_split():
    train, test, full = open_source("digits:train"), open_source("digits:test"), open_source("digits")
    assert (len(train), len(test), len(full)) == (898, 899, 1797)
    xtr, ytr = train.arrays()
    assert xtr.shape == (898, 1, 8, 8) and xtr.max() == 255 and np.bincount(ytr).min() >= 85
    ktr = set(keys_and_skips(train.loader(1000))[0])
    kte = set(keys_and_skips(test.loader(1000))[0])
    assert not ktr & kte and len(ktr | kte) == 1797
    x, y = open_source("digits", image_size=16, channels=3).arrays(100)
    assert x.shape == (100, 3, 16, 16) and len(set(y.tolist())) == 10  # a spread subset, not the first 100
    with pytest.raises(SourceError, match="split"):
        open_source("digits:val")


def test_downloaded_builtins_parse_their_cached_files(tmp_path, monkeypatch):
    """cifar10 / mnist read the original formats; files already in the cache are not downloaded."""
    from selfsup.data.sources import builtins as sources

    monkeypatch.setattr(sources, "CACHE_DIR", tmp_path)
    rows = np.concatenate([np.arange(4, dtype=np.uint8)[:, None], RNG.integers(0, 255, (4, 3072))], 1)
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.size = rows.size
        tar.addfile(info, io.BytesIO(rows.astype(np.uint8).tobytes()))
    x, y = open_source("cifar10:test").arrays()
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 2, 3]
    assert np.array_equal(x[1].reshape(-1), rows[1, 1:])
    (tmp_path / "mnist").mkdir()
    for name, header, body in (("images-idx3-ubyte", (2051, 3, 28, 28), bytes(3 * 784)),
                               ("labels-idx1-ubyte", (2049, 3), bytes([7, 8, 9]))):
        data = struct.pack(f">{len(header)}I", *header) + body
        (tmp_path / "mnist" / f"t10k-{name}.gz").write_bytes(gzip.compress(data))
    src = open_source("mnist:test")
    assert src.spec.channels == 1 and src.arrays()[1].tolist() == [7, 8, 9]


def test_collate_and_describe():
    s = {"image": torch.zeros(1, 4, 4, dtype=torch.uint8), "label": 2, "key": "k"}
    batch = collate([s, None, {"__skip__": "b: truncated"}])
    assert batch["image"].shape == (1, 1, 4, 4) and batch["skipped"] == ["?: undecodable", "b: truncated"]
    assert collate([None])["image"].shape[0] == 0
    text = describe_sources()
    for word in ("folder", "{000000..000004}", "*.tar.gz", "http", ".npz:train", "digits", "cifar10"):
        assert word in text


def test_real_cifar10_shard():
    shard = DATA / "cifar10" / "test-000000.tar.gz"
    if not shard.exists():
        pytest.skip("../shared/data absent")
    src = open_source(str(shard))
    x, y = src.arrays(64)
    assert x.shape == (64, 3, 32, 32) and y.min() >= 0 and y.max() <= 9
    assert src.name == "cifar10" and src.spec.num_classes == 10
