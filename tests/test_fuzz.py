"""Property tests over every parser: whatever the bytes, the only outcomes are a good result or the
parser's own one-line error (DecodeError, SourceError, ConfigError, TableError); never another
exception. Bounded example counts keep the file to a few seconds."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from selfsup.config import ConfigError, load_config
from selfsup.data import SkipCounter, SourceError, open_source
from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.sources.table import TableError, read_table
from selfsup.data.sources.tar import _unsafe_name

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I", "F", "PA"]
FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"]


def image_bytes(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes | None:
    """A random w x h image in `mode` saved as `fmt`, or None where PIL cannot write that pair."""
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I", "F"):
        a = rng.integers(0, 65535, (h, w)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        img = Image.fromarray(a, mode if mode != "I;16" else None)
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode if mode != "PA" else "P")
        if mode == "PA":
            img = img.convert("PA")
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buf.getvalue()


def check_decode(data: bytes, channels: int, size: int) -> None:
    try:
        x = decode_image(data, channels, size)
    except DecodeError:
        return
    assert x.shape == (channels, size, size) and str(x.dtype) == "torch.uint8"


# --- image decoding ------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from([1, 3]), st.integers(1, 12))
def test_decode_random_bytes(data: bytes, channels: int, size: int):
    check_decode(data, channels, size)


@FUZZ
@given(st.sampled_from(MODES), st.sampled_from(FORMATS), st.integers(1, 20), st.integers(1, 20), st.integers(0, 99),
       st.sampled_from([1, 3]), st.integers(1, 12))
def test_decode_random_images_in_random_modes(mode, fmt, w, h, seed, channels, size):
    data = image_bytes(mode, fmt, w, h, seed)
    assume(data is not None)
    x = decode_image(data, channels, size)  # a well-formed image of any mode must decode
    assert x.shape == (channels, size, size)


@FUZZ
@given(st.sampled_from(FORMATS), st.integers(0, 99), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                             max_size=8), st.floats(0.0, 1.0))
def test_decode_damaged_images(fmt, seed, flips, keep):
    data = image_bytes("RGB", fmt, 16, 12, seed)
    assume(data is not None)
    b = bytearray(data[: max(1, int(len(data) * keep))])
    for pos, value in flips:
        b[pos % len(b)] = value
    check_decode(bytes(b), 3, 8)


# --- shard reader --------------------------------------------------------------------------------


def read_all(spec: str) -> tuple[list[str], SkipCounter]:
    try:
        source = open_source(spec)
    except SourceError:
        return [], SkipCounter()
    keys, skips = [], SkipCounter()
    for batch in source.loader(4):
        keys += batch["key"]
        skips.add(batch)
    return keys, skips


@FUZZ
@given(st.binary(max_size=4000), st.sampled_from([".tar", ".tar.gz"]))
def test_shard_reader_random_bytes(data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"x{suffix}").write_bytes(data)
        read_all(str(Path(d) / f"x{suffix}"))


NAME = st.lists(st.sampled_from(["a", "b", ".", "/", "\\", ":", "_", "é", " ", "..", "../", "/.."]), min_size=1,
                max_size=8).map("".join)
EXT = st.sampled_from(["png", "jpg", "cls", "json", "txt", "wav", "PNG", "tar"])


@FUZZ
@given(st.lists(st.tuples(NAME, EXT, st.one_of(st.binary(max_size=200), st.just(b"png"), st.just(b"3"))),
                max_size=10),
       st.integers(0, 99))
def test_shard_reader_random_members(members, seed):
    good = image_bytes("L", "PNG", 6, 6, seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data" / "s.tar"
        path.parent.mkdir()
        with tarfile.open(path, "w") as tar:
            add = [("first", "png", good), *members]
            for stem, ext, data in add:
                data = good if data == b"png" else data
                info = tarfile.TarInfo(f"{stem}.{ext}")
                info.size = len(data)
                try:
                    tar.addfile(info, io.BytesIO(data))
                except (ValueError, UnicodeError):
                    continue
        before = sorted(Path(d).rglob("*"))
        keys, _ = read_all(str(path))
        assert not any(_unsafe_name(k) for k in keys)
        assert sorted(Path(d).rglob("*")) == before


# --- config loader -------------------------------------------------------------------------------

KEYS = ["method", "encoder", "data", "train", "out", "name", "mask_ratio", "lr", "steps", "epochs", "budget",
        "batch_size", "size", "width", "path", "seed", "devices", "strategy", "precision", "x", "", "1"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["mae", "vit", "10m", "1e-3", "auto", "ddp", "[1", "{"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers()),
                                                                       inner, max_size=4)), max_leaves=10)


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(), st.booleans()), VALUES, max_size=5))
def test_config_random_yaml_dicts(raw):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "run.yaml").write_text(yaml.safe_dump(raw))
        try:
            load_config(Path(d) / "run.yaml")
        except ConfigError as e:
            assert "\n" not in str(e)


@FUZZ
@given(st.text(max_size=200))
def test_config_random_yaml_text(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "run.yaml").write_text(text)
        try:
            load_config(Path(d) / "run.yaml")
        except ConfigError as e:
            assert "\n" not in str(e)


DOTTED = st.builds(lambda a, b: f"{a}.{b}" if b else a, st.sampled_from(KEYS), st.one_of(st.just(""),
                                                                                          st.sampled_from(KEYS)))


@FUZZ
@given(st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", DOTTED, st.one_of(st.text(max_size=10),
                                                                                SCALARS.map(str))),
                          st.text(max_size=20)), max_size=4))
def test_config_random_overrides(overrides):
    try:
        load_config(overrides=overrides)
    except ConfigError as e:
        assert "\n" not in str(e)


# --- CSV reader ----------------------------------------------------------------------------------


def check_table(data: bytes, label: str | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "t.csv").write_bytes(data)
        try:
            t = read_table(Path(d) / "t.csv", target=label if label else "")
        except TableError as e:
            assert "\n" not in str(e)
            return
        assert t.features.dtype == np.float32 and not np.isinf(t.features).any()  # NaN = missing
        assert t.categories.dtype == np.int64 and len(t.labels) == len(t.features) == len(t.categories)
        assert (t.categories >= 0).all() and (t.categories < np.array(t.schema.cardinalities)).all()


@FUZZ
@given(st.binary(max_size=500), st.sampled_from([None, "a", "y"]))
def test_csv_random_bytes(data, label):
    check_table(data, label)


CELL = st.one_of(st.floats(allow_nan=True).map(str), st.integers(-5, 5).map(str), st.text(max_size=5),
                 st.sampled_from(["", "nan", "NA", "inf", "-", "1e400", "0x10", "1_0", '"', "a,b"]))


@FUZZ
@given(st.integers(1, 4), st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=8),
       st.sampled_from([None, "y"]))
def test_csv_random_cells(width, rows, label):
    header = ["y", "a", "b", "c"][:width]
    out = io.StringIO()
    import csv

    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    check_table(out.getvalue().encode(), label if label in header else None)
