"""One writer per run folder, merges that lose nothing, result folders that cannot redirect writes,
evaluation that refuses a task it cannot score, and skipped inputs reported by every reader
(issue 23, items 3, 5, 6, 8, 9). Each test replays the attack of the issue."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup import api, lock
from selfsup.evaluate.records import load_records, merge_records, record

TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=2",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "train.batch_size=4", "train.accelerator=cpu"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def png(seed: int, size: int = 12, bright: str | None = None) -> bytes:
    a = np.random.default_rng(seed).integers(0, 80, (size, size), dtype=np.uint8)
    if bright == "left":
        a[:, : size // 2] += 150
    elif bright == "right":
        a[:, size // 2:] += 150
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def folder(root: Path, classes: dict[str, int], bad: int = 0) -> Path:
    """Class subfolders of small PNGs (class "left" bright on the left, others on the right), plus
    ``bad`` corrupt files in the first class."""
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed = zlib.crc32(f"{root.name}/{c}/{i}".encode())
            (root / c / f"{i:03d}.png").write_bytes(png(seed, bright="left" if c == "left" else "right"))
    first = root / next(iter(classes))
    for i in range(bad):
        (first / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("writers")
    return api.pretrain("digits:train", "mae", overrides=TINY, out=tmp / "run", steps=1, log=lambda m: None)


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its content hash (the lock file's content, the holder's pid, left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != lock.LOCK_NAME}


def hold_in_other_process(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from selfsup import lock; lock.acquire(sys.argv[1]); print('held', flush=True); "
            "time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], env={**os.environ, "PYTHONPATH": SRC},
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


# ---- 5: one writer per run folder ----------------------------------------------------------------


@pytest.mark.slow  # a CLI start and a second interpreter: about 20 s on 2 busy cores
def test_second_writer_is_refused_naming_the_holder(run, tmp_path):
    holder = hold_in_other_process(run)
    try:
        with pytest.raises(lock.RunBusy, match=f"pid {holder.pid}"):
            api.pretrain(resume=run, steps=2, log=lambda m: None)
        with pytest.raises(lock.RunBusy, match=f"pid {holder.pid}"):
            api.evaluate(run, "digits:test", protocols=["knn"], shots=[1], seeds=1, log=lambda m: None)
        with pytest.raises(lock.RunBusy, match=f"pid {holder.pid}"):
            api.report(run, log=lambda m: None)
        # the command line: one line, rc 2, the holder named
        env = {**os.environ, "PYTHONPATH": SRC}
        r = subprocess.run([sys.executable, "-m", "selfsup.cli", "pretrain", "--out", str(run), "--resume"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert lines[-1].startswith("error: ") and f"pid {holder.pid}" in lines[-1], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed, not released): the kernel dropped its lock, nothing stale is left
    api.report(run, log=lambda m: None)


def test_lock_is_reentrant_in_one_process_and_released_on_return(tmp_path):
    @lock.writes
    def outer():
        lock.hold(tmp_path)
        inner()
        return lock._held[tmp_path.resolve()][1]

    @lock.writes
    def inner():
        lock.hold(tmp_path)

    assert outer() == 1  # the inner command's hold was released when it returned, the outer's kept
    assert tmp_path.resolve() not in lock._held


# ---- 6: concurrent merges lose nothing -----------------------------------------------------------


@pytest.mark.slow  # two interpreters importing torch
def test_two_processes_merging_at_once_lose_no_record(tmp_path):
    path = tmp_path / "metrics.json"
    n = 300  # the attack: 2 x 300 merges kept 348 of 600 records before the lock
    code = ("import sys; from selfsup.evaluate.records import merge_records, record\n"
            "tag, n = sys.argv[2], int(sys.argv[3])\n"
            "for i in range(n):\n"
            "    merge_records(sys.argv[1], [record(f'{tag}{i}', 'knn', 'ssl', 'top1', [i / n])])\n")
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), tag, str(n)], env=env) for tag in "ab"]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    tasks = [r["task"] for r in load_records(path)]
    assert len(tasks) == 2 * n and set(tasks) == {f"{t}{i}" for t in "ab" for i in range(n)}
    merge_records(path, [record("a0", "knn", "ssl", "top1", [1.0])])  # same identity: replaced, not added
    assert len(load_records(path)) == 2 * n


# ---- 3: a handed anomaly folder cannot write into another run ------------------------------------


def mvtec(root: Path) -> Path:
    for sub, n in (("train/good", 6), ("test/good", 2), ("test/hole", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            (root / sub / f"{i:03d}.png").write_bytes(png(zlib.crc32(f"{sub}/{i}".encode())))
    (root / "ground_truth/hole").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 4)).save(root / f"ground_truth/hole/{i:03d}_mask.png")
    return root


def test_anomaly_folder_naming_another_run_writes_only_inside_itself(run, tmp_path):
    tiles = mvtec(tmp_path / "tiles")
    handed = tmp_path / "handed"
    api.anomaly_fit(run, str(tiles), out=handed, log=lambda m: None)
    assert json.loads((handed / "patchcore.json").read_text())["run"] == str(run.resolve())  # names the victim
    before = tree(run)
    recs = api.anomaly_score(handed, str(tiles), log=lambda m: None)
    assert recs
    assert tree(run) == before  # the run the JSON names: not one byte written
    assert load_records(handed / "metrics.json") and (handed / "report.html").is_file()
    # the bank in its default place, inside the run: the run gets the records, as before
    api.anomaly_fit(run, str(tiles), log=lambda m: None)
    api.anomaly_score(run / "anomaly", str(tiles), report=False, log=lambda m: None)
    assert any(r.get("protocol") == "anomaly" for r in load_records(run / "metrics.json"))


# ---- 8: evaluation refuses what it cannot score --------------------------------------------------


def test_evaluation_refuses_one_class_and_a_pool_missing_a_class(run, tmp_path):
    one = folder(tmp_path / "one", {"left": 8})
    with pytest.raises(ValueError, match="at least 2 classes") as e:
        api.evaluate(run, str(one), protocols=["knn"], shots=[1], seeds=1, log=lambda m: None)
    assert "\n" not in str(e.value)
    test = folder(tmp_path / "test", {"left": 4, "right": 4})
    pool = folder(tmp_path / "pool", {"left": 6, "right": 0})
    with pytest.raises(ValueError, match="no sample of class 'right'"):
        api.evaluate(run, str(test), train_data=str(pool), protocols=["knn"], shots=[1], seeds=1, log=lambda m: None)


# ---- 9: every reader reports its skips as pretrain does ------------------------------------------


def test_embed_evaluate_and_anomaly_report_skipped_inputs(run, tmp_path):
    data = folder(tmp_path / "data", {"left": 5, "right": 5}, bad=3)
    said: list[str] = []
    api.embed(run, str(data), tmp_path / "f.npz", log=said.append)
    assert any("skipped 3 samples (" in m for m in said), said
    said.clear()
    api.evaluate(run, str(data), protocols=["knn"], baselines=[], shots=[1], seeds=1, log=said.append)
    assert any("skipped 3 samples (" in m for m in said), said
    said.clear()
    api.anomaly_fit(None, str(data / "left"), out=tmp_path / "bank", image_size=8, log=said.append)
    assert any("skipped 3 samples (" in m for m in said), said


# ---- also seen: evaluating another weights file of a run -----------------------------------------


def test_evaluating_encoder_last_records_its_weights_beside_the_runs_own(run, tmp_path):
    import shutil

    last = run / "encoder-last.safetensors"
    shutil.copy(run / "encoder.safetensors", last)
    said: list[str] = []
    api.evaluate(run, "digits:test", protocols=["knn"], shots=[1], seeds=1, max_samples=60, log=said.append)
    header = next(m for m in said if m.startswith("evaluating "))
    assert "baselines raw" in header and "scratch" not in header  # scratch is fine-tuned only, never under knn
    api.evaluate(last, "digits:test", protocols=["knn"], shots=[1], seeds=1, max_samples=60, log=said.append)
    knn = [r for r in load_records(run / "metrics.json") if r.get("protocol") == "knn" and r["encoder"] == "ssl"]
    assert {r.get("weights") for r in knn} == {None, "encoder-last.safetensors"}  # both kept, each says which
