"""Hostile run folders and data paths: a data path is data, never a command.

A run folder is something people send each other. Its ``config.yaml`` names the data; a path like
``pipe:touch /tmp/x; cat y.tar`` once reached webdataset's ``gopen``, which runs it in a shell.
Every command that opens a run folder now refuses such a folder in one line, and nothing runs.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from selfsup import api
from selfsup.config import ConfigError
from selfsup.data import SkipCounter, SourceError, open_source
from selfsup.data.sources import check_location
from selfsup.data.sources import tar as tar_mod

TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=2",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "train.batch_size=4", "train.accelerator=cpu"]


def png(seed: int, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def mvtec(root: Path) -> Path:
    """A tiny MVTec-AD layout: 6 good training images, 2 good and 2 defective test images with masks."""
    for folder, n in (("train/good", 6), ("test/good", 2), ("test/hole", 2)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{i:03d}.png").write_bytes(png(hash((folder, i)) % 1000))
    (root / "ground_truth/hole").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 4)).save(root / f"ground_truth/hole/{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, MVTec folder, marker): a finished run with a fitted anomaly bank, whose
    config.yaml then gets a data path that would run ``touch MARKER`` in a shell."""
    tmp = tmp_path_factory.mktemp("poisoned")
    run = api.pretrain("digits:train", "mae", overrides=TINY, out=tmp / "run", steps=1, log=lambda m: None)
    data = mvtec(tmp / "tiles")
    api.anomaly_fit(run, str(data), log=lambda m: None)
    marker = Path(f"/tmp/selfsup-pwned-{uuid.uuid4().hex}")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["path"] = f"pipe:touch {marker}; cat y.tar"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    yield run, data, marker
    marker.unlink(missing_ok=True)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("command", [
    "report RUN",
    "pretrain --resume RUN --steps 2",
    "pretrain --out RUN --resume",
    "evaluate RUN --data digits:test --protocol knn --shots 1",
    "anomaly fit RUN --data TILES",
    "anomaly score RUN/anomaly --data TILES",
    "embed RUN --data digits:test --out feats.npz",
    "export RUN --format timm",
])
def test_malicious_run_folder_runs_nothing_and_is_refused_in_one_line(poisoned, command: str):
    run, data, marker = poisoned
    args = command.replace("RUN", str(run)).replace("TILES", str(data)).split()
    proc = cli(*args, cwd=run.parent)
    assert not marker.exists(), f"{command}: the shell command in config.yaml ran"
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "'pipe:', which selfsup does not open" in last, proc.stderr[-2000:]
    assert "config.yaml" in last and "local path" in last  # names the file and the accepted forms


@pytest.mark.parametrize("spec", ["pipe:touch MARKER; cat y.tar", "file://MARKER", "s3://bucket/MARKER.tar",
                                  "gs://b/x-{0..3}.tar", "sftp://host/MARKER.tar", "hf://datasets/x"])
def test_data_paths_with_other_schemes_are_refused_everywhere(tmp_path: Path, spec: str):
    marker = tmp_path / "pwned"
    spec = spec.replace("MARKER", str(marker))
    for call in (lambda: open_source(spec), lambda: check_location(spec),
                 lambda: api.pretrain(spec, "mae", overrides=TINY, out=tmp_path / "r", steps=1, log=lambda m: None),
                 lambda: api.anomaly_fit(None, spec, out=tmp_path / "bank", log=lambda m: None)):
        with pytest.raises((SourceError, ConfigError)) as err:
            call()
        assert "\n" not in str(err.value) and "http(s)://" in str(err.value)
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_local_http_and_builtin_forms_still_pass():
    for spec in ("digits:train", "cifar10:test", "x.npz:train", "data/x.npz", "https://h/x-{0..3}.tar",
                 "HTTP://h/x.tar", "shards/train-*.tar.gz", "./pipe:x.tar", "C:\\data\\x.tar", "a/b:c.tar"):
        assert check_location(spec) == spec


def test_shard_paths_are_opened_as_files_never_as_commands(tmp_path: Path):
    """Below the location check, the tar reader itself opens anything that is not http(s) as a
    file: a string that got past every check is at worst a missing file."""
    marker = tmp_path / "pwned"
    with pytest.raises(FileNotFoundError):
        list(tar_mod.tar_samples(f"pipe:touch {marker}; cat y.tar"))
    assert not marker.exists()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_one_key_holding_too_many_bytes_is_one_skip_and_is_not_buffered(tmp_path: Path, monkeypatch):
    """The member cap bounds each member; the sample cap bounds all members of one KEY together."""
    monkeypatch.setattr(tar_mod, "MAX_MEMBER_BYTES", 4000)
    monkeypatch.setattr(tar_mod, "MAX_SAMPLE_BYTES", 6000)
    good = png(0)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add(tar, "a.png", good)
        for ext in ("png", "json", "txt", "bin", "dat"):  # each under 4000 bytes, 15000 together
            add(tar, f"fat.{ext}", good if ext == "png" else b"x" * 3000)
        add(tar, "b.png", good)
    items = list(tar_mod.tar_samples(str(tmp_path / "s.tar")))
    keys = [i[0] for i in items if isinstance(i, tuple)]
    skips = SkipCounter()
    skips.add([i["__skip__"] for i in items if isinstance(i, dict)])
    assert keys == ["a", "b"] and skips.by_reason == {"too large": 1}
    loaded = open_source(str(tmp_path / "s.tar"))  # the same through the streamed source and its counter
    counter, seen = SkipCounter(), []
    for batch in loaded.loader(2):
        counter.add(batch)
        seen += batch["key"]
    assert sorted(seen) == ["a", "b"] and counter.by_reason == {"too large": 1}
