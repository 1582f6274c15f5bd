"""Hostile input: every bad file is skipped and counted, or refused in one line; nothing is written
outside the run folder; checkpoints and weights never run code."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import api
from selfsup.config import ConfigError, load_config
from selfsup.data import SkipCounter, SourceError, open_source
from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.sources import tar as sources_mod
from selfsup.data.sources.table import TableError, read_table
from selfsup.train.checkpoint import newest_good_checkpoint, safe_torch_load

RNG = np.random.default_rng(0)
TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=1",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "train.batch_size=4", "train.accelerator=cpu"]


def encode(mode: str, fmt: str = "PNG", size: tuple[int, int] = (12, 10)) -> bytes:
    if mode == "I;16":
        img = Image.fromarray(RNG.integers(0, 65535, size[::-1]).astype(np.uint16))
    else:
        img = Image.fromarray(RNG.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


WRONG_MODES = {"cmyk.jpg": encode("CMYK", "JPEG"), "grey16.png": encode("I;16"), "palette.png": encode("P"),
               "alpha.png": encode("RGBA"), "grey_alpha.tif": encode("LA", "TIFF"), "bilevel.png": encode("1")}
DAMAGED = {"corrupt.jpg": b"GIF89a but not really", "truncated.jpg": encode("RGB", "JPEG", (64, 64))[:200],
           "corrupt.dcm": b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 20,
           "truncated.tif": encode("I;16", "TIFF", (64, 64))[:300],
           "empty.png": b"", "bomb.png": png_claiming(50_000, 50_000), "large.png": png_claiming(10_000, 10_000)}


def all_batches(loader) -> tuple[list[torch.Tensor], list[str], SkipCounter]:
    images, keys, skips = [], [], SkipCounter()
    for batch in loader:
        images.append(batch["image"])
        keys += batch["key"]
        skips.add(batch)
    return images, keys, skips


# --- image files ---------------------------------------------------------------------------------


def test_image_folder_decodes_odd_modes_and_counts_damaged_files(tmp_path: Path):
    (tmp_path / "ok.png").write_bytes(encode("RGB"))
    for name, data in {**WRONG_MODES, **DAMAGED}.items():
        (tmp_path / name).write_bytes(data)
    images, keys, skips = all_batches(open_source(str(tmp_path), image_size=8, channels=3).loader(4))
    assert sorted(keys) == sorted(["ok.png", *WRONG_MODES])  # odd modes are converted, not lost
    assert torch.cat(images).shape == (7, 3, 8, 8)
    assert skips.by_reason == {"corrupt": 2, "truncated": 2, "empty": 1, "too large": 2}


def test_decompression_bomb_is_refused_before_decoding():
    for w, h in ((50_000, 50_000), (10_000, 10_000)):
        with pytest.raises(DecodeError, match="too large"):
            decode_image(png_claiming(w, h), 3, 8)


def test_folder_of_only_damaged_files_is_refused_when_opened(tmp_path: Path):
    for name, data in DAMAGED.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(SourceError, match="none of the first 7 images decodes") as err:
        open_source(str(tmp_path))
    assert "\n" not in str(err.value)


# --- shards --------------------------------------------------------------------------------------


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (0 if link else len(data)), kind, link
    tar.addfile(info, None if link else io.BytesIO(data))


def hostile_shard(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    good = encode("L")
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            add(tar, f"good{i}.png", good)
            add(tar, f"good{i}.cls", b"%d" % i)
        add(tar, "../escape.png", good)  # path traversal
        add(tar, "/abs/escape.png", good)
        add(tar, "deep/../../escape.png", good)
        add(tar, "link.png", b"", tarfile.SYMTYPE, "/etc/passwd")  # links are never followed
        add(tar, "hard.png", b"", tarfile.LNKTYPE, "good0.png")
        add(tar, "words.png", good)
        add(tar, "words.cls", b"cat")  # a label that is not a number
        add(tar, "range.png", good)
        add(tar, "range.cls", b"7")  # out of range of classes.txt
        add(tar, "minus.png", good)
        add(tar, "minus.cls", b"-2")
        add(tar, "badjson.png", good)
        add(tar, "badjson.json", b"{not json")
        add(tar, "listjson.png", good)
        add(tar, "listjson.json", b"[1, 2]")
        add(tar, "huge.png", RNG.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    (path.parent / "classes.txt").write_text("a\nb\nc\n")
    return path


def test_hostile_shard_members_are_skipped_counted_and_never_written(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sources_mod, "MAX_MEMBER_BYTES", 2000)
    shard = hostile_shard(tmp_path / "data" / "hostile.tar")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(tmp_path.rglob("*"))
    _, keys, skips = all_batches(open_source(str(shard)).loader(4))
    assert sorted(keys) == ["good0", "good1", "good2"]
    assert skips.by_reason == {"unsafe path": 3, "bad label": 3, "bad json": 2, "too large": 1}
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted, here or anywhere up the tree
    assert not (tmp_path / "escape.png").exists() and not Path("/abs/escape.png").exists()


def test_garbage_shard_is_refused_and_a_damaged_one_in_a_list_is_skipped(tmp_path: Path):
    (tmp_path / "a-0.tar").write_bytes(RNG.integers(0, 255, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="not a readable tar shard"):
        open_source(str(tmp_path / "a-0.tar"))
    hostile_shard(tmp_path / "a-1.tar")
    _, keys, skips = all_batches(open_source(str(tmp_path / "a-{1,0}.tar")).loader(4))
    assert len(keys) == 3 and skips.by_reason["unreadable shard"] == 1


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_shard_damaged_halfway_is_counted_not_silently_shortened(tmp_path: Path, suffix: str):
    """tarfile stops quietly at a garbage header; the reader checks the rest of the stream (and the
    gzip CRC), so the samples before the damage are read and the damage is counted."""
    whole = tmp_path / f"whole{suffix}"
    with tarfile.open(whole, "w:gz" if suffix == ".tar.gz" else "w") as tar:
        for i in range(20):
            add(tar, f"k{i:02d}.png", encode("L", size=(24, 24)))
    data, damaged = whole.read_bytes(), tmp_path / f"damaged{suffix}"
    garbage = RNG.integers(1, 255, len(data) - len(data) // 2, dtype=np.uint8).tobytes()
    damaged.write_bytes(data[: len(data) // 2] + garbage)
    _, keys, skips = all_batches(open_source(str(damaged)).loader(4))
    assert 0 < len(keys) < 20 and skips.by_reason["unreadable shard"] == 1


# --- tables --------------------------------------------------------------------------------------


def test_csv_bad_cells_are_missing_or_skipped_with_reasons(tmp_path: Path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,V1,Amount,Class\n"
                   "a,0.5,10,0\n"
                   "b,NaN,11,1\n"       # NaN: a missing value, embedded as missing
                   "c,0.7,ten,0\n"      # text in a numeric column
                   "d,,12,1\n"          # missing
                   "e,inf,13,0\n"       # not finite
                   "f,0.9,14,maybe\n"   # label not a class
                   "g,1.0,15\n"         # a cell short: no label
                   "h,1.1,16,1,9\n"     # a cell too many
                   "i,1.2,17,1\n")
    t = read_table(csv, target="Class")  # bad="missing": text and inf read as missing and counted
    assert t.schema.numeric == ["V1", "Amount"] and list(t.schema.dropped) == ["id"]
    assert t.labels.tolist() == [0, 1, 0, 1, 0, 1] and np.isnan(t.features[[1, 3, 4], 0]).all()
    assert np.isnan(t.features[2, 1]) and t.imputed == {"not finite in V1": 1, "text in Amount": 1}
    assert t.skips.by_reason == {"wrong length": 1, "bad label": 1, "missing label": 1}
    s = read_table(csv, target="Class", bad="skip")  # or the row is skipped and counted
    assert s.keys == ["t/0", "t/1", "t/3", "t/7"] and not s.imputed
    assert s.skips.by_reason == {"wrong length": 1, "text in Amount": 1, "not finite in V1": 1, "bad label": 1,
                                 "missing label": 1}


def test_unusable_csv_is_refused_in_one_line(tmp_path: Path):
    cases = {"binary.csv": b"\x00\xff\xfe" * 50, "empty.csv": b"", "header.csv": b"a,b\n",
             "text.csv": b"name,city\nann,rome\nbob,oslo\n", "dup.csv": b"a,a\n1,2\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TableError) as err:
            read_table(tmp_path / name)
        assert "\n" not in str(err.value), name
    (tmp_path / "ok.csv").write_text("x,y\n1,2\n")
    with pytest.raises(TableError, match="no column 'label'; columns: x, y"):
        read_table(tmp_path / "ok.csv", target="label")


# --- weights and checkpoints never run code ------------------------------------------------------


class Evil:
    """Unpickling this calls open(marker, "w"): a file appears if pickled code ever runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    run = api.pretrain("digits:train", "mae", overrides=TINY, out=tmp_path / "run", steps=1, log=lambda m: None)
    for name in ("last.ckpt", "previous.ckpt"):
        torch.save({"state_dict": Evil(marker), "global_step": 5}, run / "checkpoints" / name)
    with pytest.raises(ValueError, match="refusing to load") as err:
        safe_torch_load(run / "checkpoints" / "last.ckpt")
    assert "\n" not in str(err.value)
    assert newest_good_checkpoint(run / "checkpoints") is None
    lines: list[str] = []
    api.pretrain(resume=run, steps=1, log=lines.append)  # starts over rather than load it
    assert any("no usable checkpoint" in line for line in lines)
    torch.save({"w": Evil(marker)}, run / "encoder.safetensors")  # not safetensors at all
    with pytest.raises(Exception):  # noqa: B017 - whichever error, the point is that no code ran
        api.load_encoder(run)
    assert not marker.exists()


# --- the run folder is the only place written ----------------------------------------------------


AUDIT = r"""
import json, os, sys
writes = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
           "os.utime", "shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.rmtree", "tempfile.mkstemp",
           "tempfile.mkdtemp", "sqlite3.connect"}

def path_of(a):
    return os.path.abspath(os.fsdecode(a)) if isinstance(a, (str, bytes, os.PathLike)) else None

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE:
            writes.append(path_of(path))
    elif event in CHANGES:
        writes.extend(path_of(a) for a in args[:2])

sys.addaudithook(hook)
from selfsup import api
data, out, log = sys.argv[1:4]
api.pretrain(data, "mae", overrides=sys.argv[4:], out=out, steps=3, log=lambda m: None)
found = json.dumps(sorted({w for w in writes if w}))
with open(log, "w") as f:
    f.write(found)
"""


def tree(root: Path) -> dict[Path, int]:
    """Every path below ``root`` with its modification time (0 for folders: their entries are listed)."""
    return {p: 0 if p.is_dir() else p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def third_party(path: Path, home: Path, tmp: Path) -> bool:
    """Writes that are no part of selfsup and do not depend on the data, made at import by libraries
    under it: matplotlib's config and font cache (Lightning imports torchmetrics, which imports
    matplotlib), torch's inductor cache folder (torch._dynamo at import), and the probe file
    ``tempfile`` writes and deletes at once to find a writable temporary folder."""
    mpl = (home / ".config", home / ".config" / "matplotlib", home / ".cache" / "matplotlib")
    if path in mpl or mpl[2] in path.parents:
        return True
    if path.name.startswith("torchinductor_") and path.parent in (tmp, Path("/tmp")):
        return True
    return path.parent in (tmp, Path("/tmp")) and len(path.name) == 8 and not path.exists()


def test_pretrain_on_hostile_data_writes_only_inside_the_run_folder(tmp_path: Path):
    """Run in a process with a fresh $HOME and $TMPDIR inside the watched tree and a Python audit
    hook that records every file opened for writing, created, renamed or removed anywhere (the
    real /tmp and ~/.cache included): only the run folder changes."""
    import json
    import os
    import subprocess
    import sys

    data, cwd, home, tmp = tmp_path / "data", tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for d in (data, cwd, home / ".cache", tmp):
        d.mkdir(parents=True)
    for i in range(6):
        (data / f"ok{i}.png").write_bytes(encode("RGB"))
    for name, value in {**WRONG_MODES, **DAMAGED}.items():
        (data / name).write_bytes(value)
    run, log = tmp_path / "run", tmp_path / "writes.json"
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONWARNINGS": "ignore"}
    env.pop("XDG_CACHE_HOME", None)
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-c", AUDIT, str(data), str(run), str(log), *TINY], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    writes = [Path(w) for w in json.loads(log.read_text())]
    outside = [w for w in writes if w != run and run not in w.parents and not third_party(w, home, tmp)]
    assert writes and not outside, outside  # not /tmp, not ~/.cache, not the data or working folder
    after = {p: t for p, t in tree(tmp_path).items()
             if p != run and run not in p.parents and p != log and not third_party(p, home, tmp)}
    assert after == before  # $HOME/.cache and $TMPDIR (fresh, inside tmp_path) too: nothing new, nothing touched
    assert (run / "encoder.safetensors").is_file()


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,hint", [
    ("method: {name: mae, mask_ration: 0.5}\n", "did you mean 'method.mask_ratio'?"),
    ("trian: {lr: 1}\n", "did you mean 'train'?"),
    ("train: {bach_size: 3}\n", "did you mean 'train.batch_size'?"),
])
def test_unknown_config_keys_suggest_the_nearest(tmp_path: Path, text: str, hint: str):
    (tmp_path / "run.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert hint in str(err.value) and "\n" not in str(err.value)
