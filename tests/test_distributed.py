"""Scale-out: DDP through Lightning equals one process; sharded evaluation; streaming splits.

Run as a script (``torchrun --nproc_per_node 2 tests/test_distributed.py OUT DEVICES BATCH``),
this file is also the worker the DDP test launches.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from selfsup import distributed
from selfsup.data import open_source
from selfsup.data.spec import InputSpec, normalize, to_float
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.features import sharded_features
from selfsup.methods import METHODS
from selfsup.methods import mae as mae_module
from selfsup.methods.mae import MAE

HERE = Path(__file__).resolve()
STEPS = 5
TINY = ["data.image_size=8", "data.num_workers=0", "encoder.size=custom", "encoder.width=32", "encoder.depth=1",
        "encoder.heads=2", "encoder.patch_size=4", "method.decoder_width=16", "method.decoder_depth=1",
        "method.decoder_heads=2", "method.augment=none", "train.accelerator=cpu", "train.lr=3e-3",
        "train.warmup=0.2", "train.log_every=1"]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- DDP: 2 processes x B/2 == 1 process x B ----------------------------------------------------


class KeyedMAE(MAE):
    """MAE whose mask is a function of each sample's key, so a sample is masked alike on rank 0,
    rank 1 or a single process: the comparison then tests only the data split and the gradient
    averaging. Keeps its training losses."""

    losses: list[float] = []

    def forward(self, batch: dict, mask_ratio: float | None = None) -> dict:
        keys, real = batch["key"], mae_module.random_masking

        def by_key(b: int, n: int, ratio: float, device=None, generator=None):
            parts = [real(1, n, ratio, device, torch.Generator().manual_seed(zlib.crc32(k.encode()))) for k in keys]
            return tuple(torch.cat(p) for p in zip(*parts, strict=True))

        mae_module.random_masking = by_key
        try:
            out = super().forward(batch, mask_ratio)
        finally:
            mae_module.random_masking = real
        if self.training:
            KeyedMAE.losses.append(float(out["loss"].detach()))
        return out


def tiny_mae_init() -> dict[str, torch.Tensor]:
    """The weights a run starts from (api.pretrain seeds with train.seed = 0 before building)."""
    from selfsup.config import load_config
    from selfsup.methods import build_method

    cfg = load_config(overrides=TINY)
    torch.manual_seed(0)
    return build_method("mae", cfg.method_options, cfg.encoder, InputSpec(channels=1, image_size=8)).state_dict()


def pretrain_keyed(out: Path, devices: int, batch: int) -> None:
    from selfsup import api

    METHODS["keyed_mae"] = KeyedMAE
    strategy = ["train.strategy=ddp", f"train.devices={devices}"] if devices > 1 else ["train.devices=1"]
    api.pretrain("digits:train", "keyed_mae", overrides=[*TINY, f"train.batch_size={batch}", *strategy],
                 out=out, steps=STEPS, progress=False, log=lambda m: None)
    rank = distributed.global_rank()
    (out / f"losses-{rank}.json").write_text(json.dumps(KeyedMAE.losses))


class NaNOnRank1(MAE):
    """Rank 1 alone turns NaN after 3 steps: every rank must skip together, then stop together."""

    calls = 0

    def forward(self, batch: dict, mask_ratio: float | None = None) -> dict:
        out = super().forward(batch, mask_ratio)
        NaNOnRank1.calls += 1
        if NaNOnRank1.calls > 3 and distributed.global_rank() == 1:
            out["loss"] = out["loss"] * float("nan")
        return out


def pretrain_nan_on_one_rank(out: Path) -> None:
    from selfsup import api
    from selfsup.train.engine import NonFiniteLossError

    METHODS["nan_rank1"] = NaNOnRank1
    overrides = [*TINY, "train.batch_size=4", "train.strategy=ddp", "train.devices=2", "train.ckpt_every=1",
                 "train.max_bad_steps=3"]
    try:
        api.pretrain("digits:train", "nan_rank1", overrides=overrides, out=out, steps=20, log=lambda m: None)
    except NonFiniteLossError as e:
        (out / f"stopped-{distributed.global_rank()}.txt").write_text(str(e))


def pretrain_budget_with_skewed_clocks(out: Path) -> None:
    """Rank 1's clock runs 3x fast: with a budget every rank must still follow rank 0's clock."""
    from selfsup import api
    from selfsup.train import engine

    if distributed.global_rank() == 1:
        real = engine.time.monotonic
        engine.time = SimpleNamespace(monotonic=lambda: 3 * real())
    schedule: list[tuple[int, int]] = []
    real_fit = engine.fit

    def fit(*args, **kwargs):
        module = real_fit(*args, **kwargs)
        schedule.append((module.total_steps, module.global_step))
        return module

    engine.fit = fit
    api.pretrain("digits:train", "mae", overrides=[*TINY, "train.batch_size=4", "train.strategy=ddp",
                                                    "train.devices=2"], out=out, budget="6s", progress=False,
                 log=lambda m: None)
    (out / f"clock-{distributed.global_rank()}.json").write_text(json.dumps(schedule[0]))


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """One torchrun launch, 2 CPU processes (gloo), running the three DDP scenarios below."""
    folder = tmp_path_factory.mktemp("ddp")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(HERE), str(folder)]
    proc = subprocess.run(cmd, cwd=folder, env=quiet_env(), capture_output=True, text=True, timeout=300)
    why = [line for line in proc.stderr.splitlines() if "Error" in line or "what()" in line or "terminate" in line]
    assert proc.returncode == 0, "\n".join(why[:20]) + proc.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(ddp_runs: Path, tmp_path: Path, monkeypatch):
    """torchrun, 2 CPU processes (gloo), per-rank batch 4 == one process, batch 8: same loss at
    every step (the mean of the ranks') and the same final weights."""
    (tmp_path / "ddp").symlink_to(ddp_runs / "ddp")
    monkeypatch.setattr(KeyedMAE, "losses", [])
    monkeypatch.setitem(METHODS, "keyed_mae", KeyedMAE)
    # A single CPU process probes one step's memory on a copy of the method before step 1 (the DDP
    # ranks do not); KeyedMAE's class-level list would record those probe forwards as steps.
    monkeypatch.setattr(importlib.import_module("selfsup.api.pretrain"), "_fit_batch_to_memory", lambda *a, **k: None)
    pretrain_keyed(tmp_path / "single", 1, 8)

    r0, r1, single = (json.loads((tmp_path / d / f"losses-{r}.json").read_text())
                      for d, r in (("ddp", 0), ("ddp", 1), ("single", 0)))
    assert len(r0) == len(r1) == len(single) == STEPS
    assert torch.allclose(torch.tensor(r0) / 2 + torch.tensor(r1) / 2, torch.tensor(single), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.tensor(r0), torch.tensor(single), atol=1e-3)  # the ranks saw different halves
    ddp, one = load_file(tmp_path / "ddp" / "method.safetensors"), load_file(tmp_path / "single" / "method.safetensors")
    assert set(ddp) == set(one)
    for k in one:
        a, b = ddp[k], one[k]
        if k.endswith("attn.qkv.bias"):
            # The key bias has a zero gradient in exact arithmetic (softmax ignores a shift shared by
            # all keys), so its float32 gradient is rounding noise that Adam scales up to ~lr steps.
            d = len(a) // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (k, (a - b).abs().max())
    assert not torch.allclose(one["encoder.blocks.0.attn.proj.weight"],
                              tiny_mae_init()["encoder.blocks.0.attn.proj.weight"], atol=1e-3)  # it trained
    metrics = {r["metric"]: r["mean"] for r in json.loads((tmp_path / "ddp" / "metrics.json").read_text())}
    assert metrics["steps"] == STEPS


@pytest.mark.slow
def test_ddp_nan_on_one_rank_skips_and_stops_every_rank(ddp_runs: Path):
    """Lightning cannot skip a DDP step by returning None; the engine's skip keeps the ranks in step,
    and after 3 bad steps in a row both stop with the same line, the saved weights untouched."""
    from selfsup.train.checkpoint import safe_torch_load

    messages = [(ddp_runs / "nan" / f"stopped-{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1] and "loss was not finite for 3 steps in a row" in messages[0]
    ckpt = safe_torch_load(ddp_runs / "nan" / "checkpoints" / "last.ckpt")
    assert ckpt["selfsup"]["bad_steps"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.slow
def test_ddp_budget_follows_rank_zero_clock(ddp_runs: Path):
    """Rank 1's clock ran 3x fast; both ranks sized the same schedule and the run ended normally."""
    ranks = [json.loads((ddp_runs / "budget" / f"clock-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # (total_steps, steps run)
    assert ranks[0][0] > 1 and ranks[0][1] > 1


def test_multi_process_run_needs_a_run_folder(monkeypatch):
    from selfsup import api
    from selfsup.config import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="needs --out"):
        api.pretrain("digits:train", "mae", overrides=TINY, steps=1, log=lambda m: None)


def test_fsdp_config_path(monkeypatch):
    """FSDP needs CUDA (docs/distributed.md says why); on CPU the refusal is one line, and on a GPU
    machine train.accelerator=auto is turned into the "gpu" Lightning's FSDP asks for."""
    from selfsup.config import load_config
    from selfsup.train.engine import build_trainer, resolve_accelerator

    cfg = load_config(overrides=["train.strategy=fsdp", "train.accelerator=cpu", "train.devices=2"]).train
    with pytest.raises(ValueError, match="requires a GPU accelerator") as err:
        build_trainer(cfg, Path("unused"))
    assert "\n" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_accelerator("auto", "fsdp") == "gpu" and resolve_accelerator("auto", "ddp") == "auto"


# --- sharded feature extraction ------------------------------------------------------------------


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=4)
    return build_encoder(cfg, InputSpec(image_size=8))


def images(n: int = 11) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def _features_worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        encoder, seen = tiny_vit(), []
        encoder.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
        feats = sharded_features(encoder, images(), batch_size=2)
        torch.save({"features": feats, "seen": torch.tensor(sum(seen))}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_features_gather_in_order(tmp_path: Path):
    """2 gloo processes each encode their block of 11 images; both end with all 11 in order."""
    mp.spawn(_features_worker, args=(str(tmp_path),), nprocs=2, join=True)
    from selfsup.evaluate.features import extract_features

    expected = extract_features(tiny_vit(), images())
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [int(p["seen"]) for p in parts] == [5, 6]  # each rank encoded only its block
    for p in parts:
        assert p["features"].shape == expected.shape
        assert torch.allclose(p["features"], expected, atol=1e-5)


def test_shard_range_and_one_process():
    for n in (0, 1, 5, 11):
        for world in (1, 2, 3, 4):
            assert [i for r in range(world) for i in distributed.shard_range(n, r, world)] == list(range(n))
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_in_order(x, 3) is x and distributed.world_size() == 1
    expected = tiny_vit().eval()(normalize(to_float(images(5))))
    assert torch.allclose(sharded_features(tiny_vit(), images(5)), expected, atol=1e-6)


# --- streaming: every sample once per epoch over ranks x workers ---------------------------------


def write_shards(folder: Path, n_shards: int, per_shard: int) -> Path:
    import io
    import tarfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(folder / f"train-{s:06d}.tar", "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.new("L", (8, 8), (s * per_shard + i) % 256).save(buf, "PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", b"%d" % (i % 3))):
                    info = tarfile.TarInfo(f"s{s}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


@contextmanager
def http_server(directory: Path):
    """``python -m http.server`` on 127.0.0.1 (a free port), stopped on exit."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                             str(directory), "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        port = int(line.split(" port ")[1].split()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def keys_by_rank(spec: str, world: int = 2, workers: int = 2) -> list[list[str]]:
    """Each simulated rank's keys for one epoch, read with ``workers`` DataLoader workers."""
    out = []
    for rank in range(world):
        loader = open_source(spec).loader(3, shuffle=True, seed=1, num_workers=workers)
        loader.dataset.ranks = (rank, world)
        out.append([k for batch in loader for k in batch["key"]])
    return out


@pytest.mark.parametrize("n_shards", [6, 3])  # more shards than the 4 readers, and fewer
def test_stream_split_by_rank_and_worker_reads_each_sample_once(tmp_path: Path, n_shards: int):
    folder = write_shards(tmp_path / "shards", n_shards, 7)
    everything = {f"s{s}_{i:03d}" for s in range(n_shards) for i in range(7)}
    per_rank = keys_by_rank(str(folder))
    counts = Counter(k for keys in per_rank for k in keys)
    assert set(counts) == everything and set(counts.values()) == {1}
    assert all(keys for keys in per_rank)
    plain = [k for b in open_source(str(folder)).loader(3) for k in b["key"]]
    mixed = [k for b in open_source(str(folder)).loader(3, shuffle=True, seed=1) for k in b["key"]]
    assert sorted(plain) == sorted(mixed) and plain != mixed  # the shuffle buffer mixes across shards


def test_http_stream_split_reads_each_sample_once(tmp_path: Path):
    folder = write_shards(tmp_path / "shards", 5, 6)
    with http_server(folder) as url:
        per_rank = keys_by_rank(f"{url}/train-{{000000..000004}}.tar")
    counts = Counter(k for keys in per_rank for k in keys)
    assert len(counts) == 30 and set(counts.values()) == {1}


if __name__ == "__main__":  # the torchrun worker of the `ddp_runs` fixture
    torch.set_num_threads(1)
    pretrain_keyed(Path(sys.argv[1]) / "ddp", 2, 4)
    pretrain_nan_on_one_rank(Path(sys.argv[1]) / "nan")
    pretrain_budget_with_skewed_clocks(Path(sys.argv[1]) / "budget")
    if dist.is_initialized():  # leave together: no rank sees its peer's connections drop mid-teardown
        dist.barrier()
        dist.destroy_process_group()
