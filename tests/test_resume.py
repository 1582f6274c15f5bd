"""Crash safety: atomic checkpoints, newest-good fallback, exact resume after SIGKILL, NaN guard."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from selfsup import api
from selfsup.data import open_source
from selfsup.methods import METHODS
from selfsup.methods.mae import MAE
from selfsup.train.checkpoint import atomic_torch_save, newest_good_checkpoint, safe_torch_load
from selfsup.train.engine import NonFiniteLossError

TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=1",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "train.batch_size=8", "train.accelerator=cpu", "train.ckpt_every=1",
        "train.deterministic=true", "train.warmup=0.2"]


def quiet(msg: str) -> None:
    pass


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# --- atomic writes -------------------------------------------------------------------------------


def test_failed_save_leaves_previous_checkpoint(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def torn(obj, f, *args, **kwargs):  # half a file on disk, then the failure
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="No space"):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    assert torch.equal(safe_torch_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temporary file is gone


WRITER = """
import sys, torch
from selfsup.train.checkpoint import atomic_torch_save
big = torch.zeros(4_000_000)
for i in range(1, 10**6):
    big[0] = i
    atomic_torch_save({"step": torch.tensor(i), "w": big}, sys.argv[1])
    if i == 1:
        print("saved", flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path: Path):
    """A process saving 16 MB checkpoints in a loop is killed at a random moment (most likely in
    the middle of a write): the file on disk is always a whole checkpoint."""
    path = tmp_path / "ckpt" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env(), text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(random.uniform(0.05, 0.6))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = safe_torch_load(newest_good_checkpoint(path.parent))
    assert ckpt["step"] >= 1 and ckpt["w"][0] == ckpt["step"]


def test_newest_good_checkpoint_falls_back_to_the_older(tmp_path: Path):
    atomic_torch_save({"step": torch.tensor(1)}, tmp_path / "previous.ckpt")
    time.sleep(0.01)
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 100)  # damaged after it was written
    (tmp_path / ".last.ckpt.abc.tmp").write_bytes(b"torn")  # what a kill mid-save leaves
    assert newest_good_checkpoint(tmp_path) == tmp_path / "previous.ckpt"
    (tmp_path / "previous.ckpt").unlink()
    assert newest_good_checkpoint(tmp_path) is None
    assert newest_good_checkpoint(tmp_path / "missing") is None


def test_engine_keeps_previous_and_resume_uses_it(tmp_path: Path):
    run = api.pretrain("digits:train", "mae", overrides=TINY, out=tmp_path / "run", steps=3, log=quiet)
    last, prev = (safe_torch_load(run / "checkpoints" / n) for n in ("last.ckpt", "previous.ckpt"))
    assert (last["global_step"], prev["global_step"]) == (3, 2)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"garbage")
    lines: list[str] = []
    api.pretrain(resume=run, steps=4, log=lines.append)
    assert any(line.startswith("resuming from") and line.endswith("previous.ckpt") for line in lines)
    assert safe_torch_load(run / "checkpoints" / "last.ckpt")["global_step"] == 4


# --- exact resume --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["builtin", "folder", "npz"])
def test_sigkill_then_resume_equals_uninterrupted_run_bit_for_bit(tmp_path: Path, kind: str):
    """`selfsup pretrain --steps N` (checkpoint every step) is SIGKILLed at a random step after its
    first checkpoint, continued with the same command plus `--resume` (no value: the --out
    folder), and ends with exactly the weights of a run never stopped: same batches, same masks
    and augmentations, same optimizer state. Over a built-in, an image folder and an npz."""
    data = "digits:train" if kind == "builtin" else resume_data(tmp_path, kind)
    steps, run = 120, tmp_path / "killed"
    cmd = [str(Path(sys.executable).with_name("selfsup")), "pretrain", "--method", "mae", "--data", data,
           "--steps", str(steps), "--out", str(run), *TINY]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = random.randint(1, steps // 2)  # killed once its checkpoints reach a random step, however fast it runs
    try:
        deadline = time.monotonic() + 120
        while checkpoint_step(run / "checkpoints" / "last.ckpt") < target and proc.poll() is None:
            assert time.monotonic() < deadline, f"no checkpoint of step {target} within 120 s"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = int(safe_torch_load(newest_good_checkpoint(run / "checkpoints"))["global_step"])
    assert 1 <= killed_at < steps and not (run / "method.safetensors").exists(), (killed_at, target)

    again = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr[-2000:]
    reference = api.pretrain(data, "mae", overrides=TINY, out=tmp_path / "reference", steps=steps, log=quiet)
    resumed, straight = load_file(run / "method.safetensors"), load_file(reference / "method.safetensors")
    assert set(resumed) == set(straight)
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), (k, killed_at)


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint another process writes atomically; 0 before the first."""
    try:
        return int(safe_torch_load(path)["global_step"]) if path.exists() else 0
    except (ValueError, KeyError):  # replaced between the check and the read
        return 0


def stream_keys(loader, n: int) -> tuple[list[list[str]], dict[int, tuple[int, int, int]]]:
    """The keys of the next `n` batches and the reader positions after them (as the engine keeps them)."""
    it, batches, positions = iter(loader), [], {}
    for _ in range(n):
        batch = next(it)
        batches.append(batch["key"])
        reader, *pos = batch["position"]
        positions[reader] = tuple(pos)
    return batches, positions


def resume_data(tmp_path: Path, kind: str) -> str:
    """A --data spec of each kind a run can resume over: shards, a built-in, an image folder, an npz."""
    if kind == "shards":
        from test_distributed import write_shards

        return str(write_shards(tmp_path, 4, 10))
    if kind == "builtin":
        return "digits:test"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    if kind == "npz":
        np.savez(tmp_path / "d.npz", images=images, labels=np.arange(40) % 3)
        return str(tmp_path / "d.npz")
    for i, img in enumerate(images):  # a folder: class subfolders, files in sorted order
        (tmp_path / "folder" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "folder" / f"c{i % 3}" / f"{i:02d}.png")
    return str(tmp_path / "folder")


@pytest.mark.parametrize("kind", ["shards", "builtin", "folder", "npz"])
def test_stream_resumes_mid_epoch_at_the_next_unseen_sample(tmp_path: Path, kind: str):
    """Read 7 batches, restart a fresh loader from the positions they carried: the next 10 batches
    (crossing into the next epoch) are those of a loader never stopped, shuffle buffer included."""
    source = open_source(resume_data(tmp_path, kind))

    def loader():
        return source.loader(3, shuffle=True, seed=5, num_workers=2, drop_last=True, infinite=True)

    straight, _ = stream_keys(loader(), 17)
    first, positions = stream_keys(loader(), 7)
    assert first == straight[:7]
    resumed = loader()
    resumed.dataset.resume(positions, batches=7)  # odd: the next batch is due from the second worker
    assert stream_keys(resumed, 10)[0] == straight[7:]


# --- non-finite losses and gradients -------------------------------------------------------------


class NaNLossAfter3(MAE):
    """Three good steps, then a NaN loss for ever. Keeps the weights it had when the bad steps began."""

    calls, snapshot = 0, None

    def forward(self, batch: dict, mask_ratio: float | None = None) -> dict:
        out = super().forward(batch, mask_ratio)
        NaNLossAfter3.calls += 1
        if NaNLossAfter3.calls > 3:
            if NaNLossAfter3.snapshot is None:
                NaNLossAfter3.snapshot = {k: v.detach().clone() for k, v in self.state_dict().items()}
            out["loss"] = out["loss"] * float("nan")
        return out


class NaNGradAfter2(MAE):
    """Two good steps, then a finite loss whose gradient is NaN (sqrt at 0). Keeps the weights it
    had when the bad steps began."""

    calls, snapshot = 0, None

    def forward(self, batch: dict, mask_ratio: float | None = None) -> dict:
        out = super().forward(batch, mask_ratio)
        NaNGradAfter2.calls += 1
        if NaNGradAfter2.calls > 2:
            if NaNGradAfter2.snapshot is None:
                NaNGradAfter2.snapshot = {k: v.detach().clone() for k, v in self.state_dict().items()}
            out["loss"] = out["loss"] + (self.mask_token * 0).abs().sqrt().sum()
        return out


def test_nan_loss_is_skipped_counted_and_stops_without_saving_poison(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(METHODS, "nan_loss", NaNLossAfter3)
    with pytest.raises(NonFiniteLossError) as err:
        api.pretrain("digits:train", "nan_loss", overrides=[*TINY, "train.max_bad_steps=3"], steps=20,
                     out=tmp_path / "run", log=quiet)
    msg = str(err.value)
    assert "\n" not in msg and "loss was not finite for 3 steps in a row" in msg
    ckpt = safe_torch_load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["selfsup"]["bad_steps"] == 2  # saved after the 2nd skipped step; the 3rd stopped the run
    for k, v in NaNLossAfter3.snapshot.items():  # skipped steps changed nothing, nothing poisoned was saved
        assert torch.equal(ckpt["state_dict"][f"method.{k}"], v), k
    assert not (tmp_path / "run" / "encoder.safetensors").exists()


def test_nonfinite_gradient_drops_the_update(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(METHODS, "nan_grad", NaNGradAfter2)
    with pytest.raises(NonFiniteLossError, match="gradient was not finite for 3 steps in a row"):
        api.pretrain("digits:train", "nan_grad", overrides=[*TINY, "train.max_bad_steps=3"], steps=20,
                     out=tmp_path / "run", log=quiet)
    saved = safe_torch_load(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    for k, v in NaNGradAfter2.snapshot.items():  # no update was applied after the grads went bad
        assert torch.equal(saved[f"method.{k}"], v), k
