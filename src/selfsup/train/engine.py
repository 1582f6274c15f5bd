"""The training engine: a method inside a LightningModule, and a Trainer set up for a run folder.

Lightning gives devices, precision, DDP/FSDP and checkpoint plumbing; this file adds what a
self-supervised run needs on top: a warmup + cosine schedule that can be sized by a wall-clock
budget, skipped-sample counting, a guard against non-finite losses, method hooks (EMA teachers),
and the run folder's logs and checkpoints.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from selfsup.data.spec import to_float
from selfsup.train.checkpoint import AtomicCheckpointIO
from selfsup.train.config import TrainConfig, parse_duration
from selfsup.train.schedule import warmup_cosine

# Lightning's start-up chatter (tips, device lines) is noise in a CLI; warnings still show.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops rather than save poisoned weights."""


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, position embeddings and class tokens."""
    skip: set[str] = set()
    for name, m in model.named_modules():
        if hasattr(m, "no_weight_decay"):
            skip |= {f"{name}.{n}" if name else n for n in m.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
        self.n_skipped = 0
        self.skipped_examples: list[str] = []
        self.loss_history: list[tuple[int, float]] = []

    @property
    def warmup_steps(self) -> int:
        return max(1, int(self.cfg.warmup * self.total_steps)) if self.total_steps else 100

    def lr_factor(self, step: int) -> float:
        total = self.total_steps or 10**9
        return warmup_cosine(step, total, self.warmup_steps, self.cfg.min_lr / self.cfg.lr)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "image" in batch:
            batch["image"] = to_float(batch["image"])
        return batch

    def training_step(self, batch: dict, batch_idx: int):
        skipped = batch.pop("skipped", [])
        self.n_skipped += len(skipped)
        self.skipped_examples.extend(skipped[: max(0, 20 - len(self.skipped_examples))])
        if len(batch.get("label", [None])) == 0:
            return None  # every sample of this batch was unreadable
        out = self.method(batch)
        loss = out["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() < 1:
            self.bad_steps += 1
            self.bad_in_row += 1
            self.log("train/bad_steps", float(self.bad_steps))
            if self.bad_in_row >= self.cfg.max_bad_steps:
                raise NonFiniteLossError(
                    f"loss was not finite for {self.bad_in_row} steps in a row (step {self.global_step}); "
                    "stopping without saving these weights: lower train.lr or check the data"
                )
            return None
        self.bad_in_row = 0
        n = len(batch["label"]) if "label" in batch else len(next(iter(batch.values())))
        self.images_seen += n
        bs = n
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, v in out.items():
            if k != "loss" and isinstance(v, torch.Tensor) and v.ndim == 0:
                self.log(f"train/{k}", v.detach().float(), batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        if batch_idx % max(1, self.cfg.log_every) == 0:
            self.loss_history.append((self.global_step, float(loss.detach())))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        hook = getattr(self.method, "on_train_batch_end", None)
        if hook is not None:
            hook(self.global_step, self.total_steps)

    def configure_optimizers(self):
        fused = torch.cuda.is_available()
        opt = torch.optim.AdamW(
            param_groups(self.method, self.cfg.weight_decay), lr=self.cfg.lr, betas=self.cfg.betas, fused=fused
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["selfsup"] = {
            "total_steps": int(self.total_steps), "elapsed": float(self.elapsed),
            "images_seen": int(self.images_seen), "bad_steps": int(self.bad_steps),
            "n_skipped": int(self.n_skipped),
            "loss_history": torch.tensor(self.loss_history, dtype=torch.float64).reshape(-1, 2),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        s = checkpoint.get("selfsup", {})
        self.total_steps = int(s.get("total_steps", self.total_steps))
        self.elapsed = float(s.get("elapsed", 0.0))
        self.images_seen = int(s.get("images_seen", 0))
        self.bad_steps = int(s.get("bad_steps", 0))
        self.n_skipped = int(s.get("n_skipped", 0))
        hist = s.get("loss_history")
        self.loss_history = [(int(a), float(b)) for a, b in hist.tolist()] if hist is not None else []


class Clock(Callback):
    """Tracks training wall time across resumes; with a budget, sizes the schedule and stops on time.

    The budget is wall-clock time spent training (all sessions of a resumed run together). After a
    few calibration steps the step time is measured and ``total_steps`` is set so the cosine
    schedule ends when the budget does; it is re-measured twice as the run goes.
    """

    def __init__(self, budget_s: float | None, calibrate_after: int = 5, calibrate_steps: int = 15):
        self.budget_s = budget_s
        self.calibrate_after, self.calibrate_steps = calibrate_after, calibrate_steps
        self.t0 = 0.0
        self.mark: tuple[int, float] | None = None
        self.checks: list[float] = [0.1, 0.3]

    def on_train_start(self, trainer: L.Trainer, module: PretrainModule) -> None:
        self.t0 = time.monotonic() - module.elapsed
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        now = time.monotonic()
        module.elapsed = now - self.t0
        if self.budget_s is None:
            return
        step = trainer.global_step
        if self.mark is None and step - self.start_step >= self.calibrate_after:
            self.mark = (step, now)
        elif self.mark is not None:
            n = step - self.mark[0]
            frac = module.elapsed / self.budget_s
            due = n == self.calibrate_steps or (self.checks and frac >= self.checks[0])
            if due and n > 0:
                if self.checks and frac >= self.checks[0]:
                    self.checks.pop(0)
                per_step = (now - self.mark[1]) / n
                remaining = max(0.0, self.budget_s - module.elapsed)
                module.total_steps = max(step + 1, step + int(remaining / per_step))
        if module.elapsed >= self.budget_s:
            trainer.should_stop = True


class StepCheckpoint(Callback):
    """Writes ``last.ckpt`` atomically every ``every`` optimizer steps and when training ends."""

    def __init__(self, folder: Path, every: int):
        self.path, self.every = folder / "last.ckpt", max(1, every)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class LineProgress(Callback):
    """Plain progress lines for logs and pipes, where a live progress bar would spam."""

    def __init__(self, every_s: float = 15.0):
        self.every_s, self.last = every_s, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, module: PretrainModule, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            loss = trainer.callback_metrics.get("train/loss")
            total = f"/{module.total_steps}" if module.total_steps else ""
            rate = module.images_seen / max(module.elapsed, 1e-9)
            print(f"step {trainer.global_step}{total}  loss {float(loss) if loss is not None else math.nan:.4f}  "
                  f"{rate:.0f} img/s  {module.elapsed:.0f}s", file=sys.stderr, flush=True)


def build_trainer(cfg: TrainConfig, run_dir: Path, *, extra_callbacks: list[Callback] | None = None,
                  progress: bool | None = None) -> tuple[L.Trainer, Clock]:
    """A Trainer logging to ``run_dir/logs`` and checkpointing to ``run_dir/checkpoints``."""
    budget = parse_duration(cfg.budget) if cfg.budget else None
    clock = Clock(budget)
    progress = sys.stderr.isatty() if progress is None else progress
    callbacks: list[Callback] = [clock, StepCheckpoint(run_dir / "checkpoints", cfg.ckpt_every)]
    callbacks.append(RichProgressBar() if progress else LineProgress())
    callbacks += extra_callbacks or []
    loggers = [
        TensorBoardLogger(run_dir / "logs", name="tensorboard", version=""),
        CSVLogger(run_dir / "logs", name="csv", version=""),
    ]
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, num_nodes=cfg.num_nodes,
        precision=resolve_precision(cfg.precision),
        max_epochs=cfg.epochs if cfg.epochs is not None else -1,
        max_steps=cfg.steps if cfg.steps is not None else -1,
        gradient_clip_val=cfg.grad_clip, log_every_n_steps=cfg.log_every,
        callbacks=callbacks, logger=loggers, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()], default_root_dir=run_dir, num_sanity_val_steps=0,
    )
    return trainer, clock


def fit(method: nn.Module, loader: torch.utils.data.DataLoader, cfg: TrainConfig, run_dir: Path, *,
        total_steps: int | None = None, resume_from: Path | None = None, progress: bool | None = None,
        extra_callbacks: list[Callback] | None = None) -> PretrainModule:
    """Train ``method`` on ``loader`` under ``cfg``; returns the module with its counters."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = PretrainModule(method, cfg, total_steps)
    if cfg.compile:
        method.compile()  # in place: parameter names, and so checkpoints, stay the same
    trainer, _ = build_trainer(cfg, run_dir, extra_callbacks=extra_callbacks, progress=progress)
    trainer.fit(module, loader, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    return module
