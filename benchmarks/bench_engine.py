"""What the training engine costs per step: ``selfsup.train.engine.fit`` (Lightning) vs a bare loop.

Both run the same MAE, the same optimizer and schedule (``PretrainModule.configure_optimizers``)
and the same uint8 batch turned to float on the device. The time per step is the interval
between consecutive step ends, so data loading, logging and callbacks are all inside it. Blocks
of engine steps and bare steps alternate; the first interval of each block is dropped.

    python benchmarks/bench_engine.py [--steps 6] [--blocks 2] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _passive_omp  # noqa: F401  (before torch)
import lightning as L
import torch
from bench_mae import build
from common import CONFIGS, record, table

from selfsup.data.spec import to_float
from selfsup.train.config import TrainConfig
from selfsup.train.engine import PretrainModule, fit


class Repeat(torch.utils.data.Dataset):
    """The same batch ``n`` times (a DataLoader with batch_size=None passes it through)."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return dict(self.batch)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


class StepTimes(L.Callback):
    def __init__(self, clock: str) -> None:
        self.now, self.ends = CLOCK[clock], []

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(self.now())


def engine_block(method: torch.nn.Module, batch: dict, cfg: TrainConfig, steps: int, run_dir: Path,
                 clock: str) -> list[float]:
    timer = StepTimes(clock)
    loader = torch.utils.data.DataLoader(Repeat(batch, steps), batch_size=None)
    fit(method, loader, cfg, run_dir, total_steps=steps, progress=False, extra_callbacks=[timer])
    return [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:], strict=True)]


def bare_block(method: torch.nn.Module, batch: dict, cfg: TrainConfig, steps: int, clock: str) -> list[float]:
    opt_cfg = PretrainModule(method, cfg, steps).configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    ends = []
    for _ in range(steps):
        loss = method({**batch, "image": to_float(batch["image"])})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ends.append(CLOCK[clock]())
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="steps per block")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: CPU seconds (for a busy machine)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    c = replace(CONFIGS["tiny32"], batch=a.batch)
    method, _ = build("selfsup", c, "cpu")
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 256, (c.batch, 3, 32, 32), dtype=torch.uint8, generator=g),
             "label": torch.zeros(c.batch, dtype=torch.long)}
    cfg = TrainConfig(steps=a.steps, accelerator="cpu", devices=1, precision="32-true", ckpt_every=10**6)
    engine, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.blocks):
            engine += engine_block(method, batch, cfg, a.steps, Path(tmp) / f"run{i}", a.clock)
            bare += bare_block(method, batch, cfg, a.steps, a.clock)
    e, b = statistics.median(engine), statistics.median(bare)
    rows = [{"loop": "engine (Lightning fit)", "step_s": round(e, 3), "images_per_s": round(c.batch / e, 1)},
            {"loop": "bare loop", "step_s": round(b, 3), "images_per_s": round(c.batch / b, 1)}]
    print(f"# engine overhead, tiny32 batch {c.batch}, {a.clock} clock: "
          f"{1e3 * (e - b):+.0f} ms per step ({100 * (e / b - 1):+.1f}%)")
    print(table(rows, ["loop", "step_s", "images_per_s"]))
    if a.json:
        env = {"clock": a.clock, "threads": torch.get_num_threads()}
        print(json.dumps([
            record("engine_overhead", "images_per_s", c.batch / e, "engine", c.name, n_steps=len(engine), **env),
            record("engine_overhead", "images_per_s", c.batch / b, "bare_loop", c.name, n_steps=len(bare), **env),
            record("engine_overhead", "ratio_vs_peer", b / e, "bare_loop", c.name, library="engine",
                   overhead_ms=round(1e3 * (e - b), 1), **env),
        ]))

if __name__ == "__main__":
    main()
