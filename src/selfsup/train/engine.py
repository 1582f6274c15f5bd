"""The training engine: a method inside a LightningModule, and a Trainer set up for a run folder.

Lightning gives devices, precision, DDP/FSDP and checkpoint plumbing; this file adds what a
self-supervised run needs on top: a warmup + cosine schedule that can be sized by a wall-clock
budget, skipped-sample counting, a guard against non-finite losses, method hooks (EMA teachers),
and the run folder's logs and checkpoints.

Resume is exact: every batch reseeds the RNG from (seed, batch number, rank), so masks and
augmentations are a function of the position, and the checkpoint holds each data reader's
position, so the loader restarts at the next unseen sample (see ``data/sources/split.py``). With
``train.deterministic`` on CPU, a run killed and resumed ends with bit-identical weights.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from selfsup import distributed, hardware
from selfsup.data.spec import IMAGE_DTYPES, to_float
from selfsup.methods.base import Method
from selfsup.train.checkpoint import AtomicCheckpointIO
from selfsup.train.config import TrainConfig, parse_duration
from selfsup.train.optim import param_groups
from selfsup.train.schedule import warmup_cosine

# Lightning's start-up chatter (tips, device lines) is noise in a CLI; warnings still show.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops rather than save poisoned weights."""


def step_seed(seed: int, batch: int, rank: int) -> int:
    """The RNG seed of one training batch: a function of (seed, batch number, rank) only."""
    return int(np.random.SeedSequence([seed, batch, rank]).generate_state(1)[0])


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when every tensor is finite on every rank (a collective when distributed)."""
    ok = torch.stack([torch.isfinite(t).all() for t in tensors]).all().float() if tensors else torch.ones(())
    if distributed.is_initialized():
        ok = ok.to(tensors[0].device) if tensors else ok
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item() >= 1)


LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """The Lightning precision string for a ``train.precision`` ("auto" follows ``hardware.resolve_precision``
    on the device the run will use; Lightning's own strings pass through)."""
    if precision in LIGHTNING_PRECISION.values():
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return LIGHTNING_PRECISION[hardware.resolve_precision(precision, "cuda" if on_gpu else "cpu")]


class PretrainModule(L.LightningModule):
    """Wraps a method (``forward(batch) -> {"loss": ...}``) with optimiser, schedule and guards."""

    def __init__(self, method: nn.Module, cfg: TrainConfig, total_steps: int | None):
        super().__init__()
        self.method, self.cfg = method, cfg
        self.total_steps = total_steps or 0
        self.elapsed = 0.0
        self.images_seen = 0
        self.bad_steps = 0
        self.bad_in_row = 0
        self.n_skipped = 0  # this rank's share; checkpoints and the end of training hold the sum over ranks
        self.skipped_examples: list[str] = []
        self.loss_history: list[tuple[int, float]] = []  # (step, loss) every log_every steps and the last step
        self.recent: collections.deque[float] = collections.deque(maxlen=max(1, cfg.log_every))  # the last steps
        self.last_step_loss: tuple[int, float] | None = None
        self.batches_seen = 0  # batches drawn, bad or empty ones included: the RNG and data clock
        self.positions: dict[int, tuple[int, int, int]] = {}  # data reader -> (readers, epoch, count)
        self.train_loader: torch.utils.data.DataLoader | None = None
        self.drop_update = False

    @property
    def warmup_steps(self) -> int:
        return max(1, int(self.cfg.warmup * self.total_steps)) if self.total_steps else 100

    def lr_factor(self, step: int) -> float:
        total = self.total_steps or 10**9
        return warmup_cosine(step, total, self.warmup_steps, self.cfg.min_lr / self.cfg.lr)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Inputs that travel as uint8 or uint16 (images) become float in [0, 1] on the training device."""
        return {k: to_float(v) if isinstance(v, torch.Tensor) and v.dtype in IMAGE_DTYPES else v
                for k, v in batch.items()}

    def training_step(self, batch: dict, batch_idx: int):
        position = batch.pop("position", None)
        if position is not None:
            self.positions[int(position[0])] = (int(position[1]), int(position[2]), int(position[3]))
        torch.manual_seed(step_seed(self.cfg.seed, self.batches_seen, self.global_rank))
        self.batches_seen += 1
        skipped = batch.pop("skipped", [])
        self.n_skipped += len(skipped)
        self.skipped_examples.extend(skipped[: max(0, 20 - len(self.skipped_examples))])
        empty = len(batch.get("label", [None])) == 0  # every sample of this batch was unreadable
        out = None if empty else self.method(batch)
        loss = None if empty else out["loss"]
        # (empty here, loss not finite here), decided together: all ranks skip a step or none does
        flags = torch.tensor([float(empty), 0.0 if empty else float(~torch.isfinite(loss.detach()))],
                             device=self.device)
        if distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        if flags[1] > 0:
            self._bad_step("loss")
        if flags.any():
            return self._skip()
        n = len(batch["label"]) if "label" in batch else len(next(iter(batch.values())))
        self.images_seen += n
        bs = n
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, v in out.items():
            if k != "loss" and isinstance(v, torch.Tensor) and v.ndim == 0:
                self.log(f"train/{k}", v.detach().float(), batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[-1]["lr"], batch_size=bs)  # the top layer's
        value = float(loss.detach())
        self.recent.append(value)
        self.last_step_loss = (self.global_step, value)
        if self.global_step % max(1, self.cfg.log_every) == 0:
            self.loss_history.append((self.global_step, value))
        return loss

    @property
    def final_loss(self) -> float:
        """Mean training loss of the last ``log_every`` good steps (of this session; NaN when none ran)."""
        return float(sum(self.recent) / len(self.recent)) if self.recent else math.nan

    def _skip(self) -> torch.Tensor:
        """A zero loss that touches every trainable parameter; the update is then dropped.

        Lightning cannot skip a step by returning None under DDP, and DDP's reducer wants a
        gradient for every parameter, so the step runs on all ranks and changes nothing.
        """
        self.drop_update = True
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def _bad_step(self, what: str) -> None:
        self.bad_steps += 1
        self.bad_in_row += 1
        self.log("train/bad_steps", float(self.bad_steps))
        if self.bad_in_row >= self.cfg.max_bad_steps:
            raise NonFiniteLossError(
                f"{what} was not finite for {self.bad_in_row} steps in a row (step {self.global_step}); "
                "stopping without saving these weights: lower train.lr or check the data"
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """A finite loss can still give non-finite gradients: drop that update (AdamW skips a
        parameter whose grad is None, moments included). 16-mixed leaves this to its grad scaler."""
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.drop_update:  # a skipped step (`_skip`)
            self.drop_update = False
            for p in params:
                p.grad = None
            return
        if self.trainer.precision != "16-mixed" and not all_finite([p.grad for p in params]):
            for p in params:
                p.grad = None
            self._bad_step("gradient")
            return
        self.bad_in_row = 0

    def on_train_start(self) -> None:
        if self.cfg.epochs is not None:  # Lightning knows the steps per epoch per rank (DDP sampler included)
            estimate = self.trainer.estimated_stepping_batches
            if math.isfinite(estimate):
                self.total_steps = int(estimate)

    def on_train_end(self) -> None:
        last = self.last_step_loss
        if last is not None and (not self.loss_history or self.loss_history[-1][0] != last[0]):
            self.loss_history.append(last)  # the history always ends at the last step
        self.n_skipped = int(distributed.sum_over_ranks(self.n_skipped))
        self.images_seen = int(distributed.sum_over_ranks(self.images_seen))
        if isinstance(self.method, Method):
            self.method.on_train_end()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if isinstance(self.method, Method):
            self.method.on_train_batch_end(self.global_step, self.total_steps)

    def configure_optimizers(self):
        # One fused kernel per parameter group on CPU too (torch >= 2.4): 0.9-1.9 % of a CPU MAE step.
        fused = all(p.device.type in ("cpu", "cuda") for p in self.method.parameters())
        groups = param_groups(self.method, self.cfg.weight_decay, self.cfg.layer_decay)
        for g in groups:  # layer-wise decay: each group's peak lr; the schedule multiplies it
            g["lr"] = self.cfg.lr * g["lr_scale"]
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas, fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Called on every rank (collectives allowed); rank 0 writes. Counts are summed over ranks."""
        positions: dict[int, tuple[int, int, int]] = {}
        for part in distributed.all_gather_objects(self.positions):
            positions.update(part)
        rows = [[r, *v] for r, v in sorted(positions.items())]
        checkpoint["selfsup"] = {
            "total_steps": int(self.total_steps), "elapsed": float(self.elapsed),
            "images_seen": int(distributed.sum_over_ranks(self.images_seen)), "bad_steps": int(self.bad_steps),
            "n_skipped": int(distributed.sum_over_ranks(self.n_skipped)),
            "loss_history": torch.tensor(self.loss_history, dtype=torch.float64).reshape(-1, 2),
            "batches_seen": int(self.batches_seen),
            "positions": torch.tensor(rows, dtype=torch.int64).reshape(-1, 4),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restores the counters (rank 0 takes the run's sums) and points the loader at the next batch."""
        s = checkpoint.get("selfsup", {})
        first = self.global_rank == 0
        if self.cfg.budget is not None or not self.total_steps:  # a budget's schedule was sized as it ran
            self.total_steps = int(s.get("total_steps", self.total_steps))
        self.elapsed = float(s.get("elapsed", 0.0))
        self.images_seen = int(s.get("images_seen", 0)) if first else 0
        self.bad_steps = int(s.get("bad_steps", 0))
        self.n_skipped = int(s.get("n_skipped", 0)) if first else 0
        hist = s.get("loss_history")
        self.loss_history = [(int(a), float(b)) for a, b in hist.tolist()] if hist is not None else []
        self.batches_seen = int(s.get("batches_seen", 0))
        pos = s.get("positions")
        self.positions = {int(r): (int(n), int(e), int(c)) for r, n, e, c in pos.tolist()} if pos is not None else {}
        dataset = getattr(self.train_loader, "dataset", None)
        if self.positions and hasattr(dataset, "resume"):
            dataset.resume(self.positions, self.batches_seen)  # before Lightning creates the loader's iterator


class Clock(Callback):
    """Tracks training wall time across resumes; with a budget, sizes the schedule and stops on time.

    The budget is time spent training (all sessions of a resumed run together): wall-clock time,
    or with ``clock="cpu"`` this process's CPU time (all its threads), which a shared machine's other
    jobs do not eat into, so a benchmark gets the same compute however busy the machine is. After a
    few calibration steps the step time is measured and ``total_steps`` is set so the cosine
    schedule ends when the budget does. The step time is measured again over each stretch between
    10, 30, 50, 70 and 90 % of the budget, so a machine that gets busier or quieter moves the end
    of the schedule with it. Under DDP every rank uses rank 0's clock: the same schedule, the same
    last step.
    """

    def __init__(self, budget_s: float | None, calibrate_after: int = 5, calibrate_steps: int = 15,
                 clock: str = "wall"):
        self.budget_s = budget_s
        self.now = time.process_time if clock == "cpu" else time.monotonic
        self.calibrate_after, self.calibrate_steps = calibrate_after, calibrate_steps
        self.t0 = 0.0
        self.mark: tuple[int, float] | None = None  # (step, elapsed) where the current measurement began
        self.checks: list[float] = [0.1, 0.3, 0.5, 0.7, 0.9]
        self.calibrated = False

    def on_train_start(self, trainer: L.Trainer, module: PretrainModule) -> None:
        self.t0 = self.now() - module.elapsed
        self.start_step = trainer.global_step
        self.checks = [c for c in self.checks if c > module.elapsed / self.budget_s] if self.budget_s else []

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        module.elapsed = distributed.from_rank_zero(self.now() - self.t0, module.device)
        if self.budget_s is None:
            return
        step, elapsed = trainer.global_step, module.elapsed
        if self.mark is None:
            if step - self.start_step >= self.calibrate_after:
                self.mark = (step, elapsed)
        else:
            n = step - self.mark[0]
            first = not self.calibrated and n >= self.calibrate_steps
            check = bool(self.checks) and elapsed >= self.checks[0] * self.budget_s
            if n > 0 and (first or check):
                self.calibrated = True
                while self.checks and elapsed >= self.checks[0] * self.budget_s:
                    self.checks.pop(0)
                per_step = (elapsed - self.mark[1]) / n
                remaining = max(0.0, self.budget_s - elapsed)
                module.total_steps = max(step + 1, step + int(remaining / per_step))
                self.mark = (step, elapsed)
        if elapsed >= self.budget_s:
            trainer.should_stop = True


def ckpt_seconds(cfg: TrainConfig) -> float | None:
    """Seconds between time-based checkpoints: ``ckpt_minutes``, and at least ten per budget."""
    every = cfg.ckpt_minutes * 60 if cfg.ckpt_minutes else None
    if cfg.budget:
        tenth = parse_duration(cfg.budget) / 10
        every = tenth if every is None else min(every, tenth)
    return every


class StepCheckpoint(Callback):
    """Writes ``last.ckpt`` atomically every ``every`` optimizer steps, every ``every_s`` seconds of
    training and when training ends. Time is the module's ``elapsed``, which ``Clock`` (placed before
    this callback) sets from rank 0's clock on every rank, so all ranks save together.

    The one before is kept as ``previous.ckpt`` (a fallback should the newest be damaged later,
    e.g. by a bad disk or copy); weights that are not finite are never saved; temporary files a
    kill left behind are removed at the next start.
    """

    def __init__(self, folder: Path, every: int, every_s: float | None = None):
        self.folder, self.every, self.every_s = folder, max(1, every), every_s
        self.path, self.previous = folder / "last.ckpt", folder / "previous.ckpt"
        self.saved_step, self.saved_elapsed = -1, 0.0

    def on_train_start(self, trainer: L.Trainer, module: PretrainModule) -> None:
        self.saved_step = trainer.global_step  # 0, or the step a resumed run's checkpoint holds
        self.saved_elapsed = module.elapsed
        if trainer.is_global_zero and self.folder.is_dir():
            for stale in self.folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def save(self, trainer: L.Trainer, module: PretrainModule) -> None:
        if not all_finite([p.detach() for p in module.parameters()]):
            print(f"selfsup: not saving step {trainer.global_step}: weights are not finite", file=sys.stderr)
            return
        if trainer.is_global_zero and self.path.exists():
            os.replace(self.path, self.previous)
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step, self.saved_elapsed = trainer.global_step, module.elapsed

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        step = trainer.global_step
        timed = self.every_s is not None and module.elapsed - self.saved_elapsed >= self.every_s
        due = step % self.every == 0 or timed
        if step > 0 and due and step != self.saved_step:
            self.save(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: PretrainModule) -> None:
        if trainer.global_step != self.saved_step:
            self.save(trainer, module)

    def on_exception(self, trainer: L.Trainer, module: PretrainModule, exception: BaseException) -> None:
        """SIGTERM (a scheduler's or a user's stop): save the step reached before exiting, so a resume
        continues from here and not from the last periodic checkpoint."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.global_step not in (0, self.saved_step):
            self.save(trainer, module)


class Snapshots(Callback):
    """Calls ``save(name)`` once training time (the module's ``elapsed``, as ``Clock`` sets it, placed
    before this callback) passes each of ``times`` ("5m", "10m"...): a time-to-accuracy curve from
    one run. Rank 0 saves; a resumed run skips the times it has passed."""

    def __init__(self, times: list[str], save: Callable[[str], None]):
        self.pending = sorted((parse_duration(t), t) for t in times)
        self.save = save

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        while self.pending and module.elapsed >= self.pending[0][0]:
            _, name = self.pending.pop(0)
            if trainer.is_global_zero:
                self.save(name)


RATE_UNITS = {"image": "img/s", "table": "rows/s", "series": "series/s"}  # samples/s otherwise


class LineProgress(Callback):
    """Plain progress lines for logs and pipes, where a live progress bar would spam.

    A run of fixed length shows ``step S/T`` (S never above T); a budget run shows the step and
    the time spent of its budget instead of the schedule's estimate of the last step, which the
    clock re-sizes as it measures. The rate is in the data's unit (img/s, rows/s, series/s,
    samples/s); under ``train.clock=cpu`` the time is labelled as CPU seconds.
    """

    def __init__(self, every_s: float = 15.0, budget_s: float | None = None, clock: str = "wall"):
        self.every_s, self.last = every_s, 0.0
        self.budget_s, self.clock = budget_s, clock

    def line(self, step: int, module: PretrainModule, loss: float) -> str:
        if self.budget_s is None and module.total_steps:
            where = f"step {min(step, module.total_steps)}/{module.total_steps}"
        else:
            where = f"step {step}"
        modality = getattr(getattr(module.method, "encoder", None), "modality", None) or getattr(
            getattr(module.method, "spec", None), "modality", None)
        unit = RATE_UNITS.get(modality or "", "samples/s")
        rate = module.images_seen / max(module.elapsed, 1e-9)
        kind = " CPU" if self.clock == "cpu" else ""
        spent = f"{module.elapsed:.0f}s{kind}" + (f" of {self.budget_s:.0f}s{kind}" if self.budget_s else "")
        return f"{where}  loss {loss:.4f}  {rate:.0f} {unit}  {spent}"

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s and trainer.is_global_zero:
            self.last = now
            loss = trainer.callback_metrics.get("train/loss")
            print(self.line(trainer.global_step, module, float(loss) if loss is not None else math.nan),
                  file=sys.stderr, flush=True)


def resolve_accelerator(accelerator: str, strategy: str) -> str:
    """Lightning's FSDP wants the accelerator named: "auto" becomes "gpu" when CUDA is there (FSDP
    does not run on CPU: see docs/distributed.md)."""
    if accelerator == "auto" and strategy.startswith("fsdp") and torch.cuda.is_available():
        return "gpu"
    return accelerator


def keep_csv_log(folder: Path) -> Path | None:
    """A resumed run's CSV log is kept: Lightning's CSVLogger would delete ``logs/csv/metrics.csv``
    ("Previous log files in this directory will be deleted"), so an earlier session's log moves to
    ``logs/csv-1/`` (then ``csv-2/``...) first. Returns where it went (None: nothing to keep)."""
    if not distributed.is_global_zero() or not folder.is_dir() or not any(folder.iterdir()):
        return None
    n = 1
    while (target := folder.with_name(f"{folder.name}-{n}")).exists():
        n += 1
    os.replace(folder, target)
    return target


def build_trainer(cfg: TrainConfig, run_dir: Path, *, extra_callbacks: list[Callback] | None = None,
                  progress: bool | None = None, guards: list[Callback] | None = None) -> tuple[L.Trainer, Clock]:
    """A Trainer logging to ``run_dir/logs`` and checkpointing to ``run_dir/checkpoints``.

    ``guards`` (e.g. ``train.monitor.Monitor``) run after the clock and before the checkpoint, so a
    checkpoint written at a step holds what they measured at that step.
    """
    budget = parse_duration(cfg.budget) if cfg.budget else None
    clock = Clock(budget, clock=cfg.clock)
    progress = sys.stderr.isatty() if progress is None else progress
    # the clock first: it sets the module's elapsed time that the checkpoint callback reads
    callbacks: list[Callback] = [clock, *(guards or []),
                                 StepCheckpoint(run_dir / "checkpoints", cfg.ckpt_every, ckpt_seconds(cfg))]
    callbacks.append(RichProgressBar() if progress else LineProgress(budget_s=budget, clock=cfg.clock))
    callbacks += extra_callbacks or []
    keep_csv_log(run_dir / "logs" / "csv")
    loggers = [
        TensorBoardLogger(run_dir / "logs", name="tensorboard", version=""),
        CSVLogger(run_dir / "logs", name="csv", version=""),
    ]
    trainer = L.Trainer(
        accelerator=resolve_accelerator(cfg.accelerator, cfg.strategy), devices=cfg.devices, strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        max_epochs=cfg.epochs if cfg.epochs is not None else -1,
        max_steps=cfg.steps if cfg.steps is not None else -1,
        gradient_clip_val=cfg.grad_clip, log_every_n_steps=cfg.log_every,
        callbacks=callbacks, logger=loggers, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], default_root_dir=run_dir, num_sanity_val_steps=0,
        deterministic=True if cfg.deterministic else None,
    )
    return trainer, clock


def fit(method: nn.Module, loader: torch.utils.data.DataLoader, cfg: TrainConfig, run_dir: Path, *,
        total_steps: int | None = None, resume_from: Path | None = None, progress: bool | None = None,
        extra_callbacks: list[Callback] | None = None, guards: list[Callback] | None = None) -> PretrainModule:
    """Train ``method`` on ``loader`` under ``cfg``; returns the module with its counters."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = PretrainModule(method, cfg, total_steps)
    module.train_loader = loader
    if cfg.compile:
        method.compile()  # in place: parameter names, and so checkpoints, stay the same
    trainer, _ = build_trainer(cfg, run_dir, extra_callbacks=extra_callbacks, progress=progress, guards=guards)
    trainer.fit(module, loader, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    return module
