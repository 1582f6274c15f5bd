"""The regression guard: score the encoder during training, keep the best weights, stop a collapse.

Continued pretraining can destroy what a public model knew: dinov2#204 reports kNN accuracy
falling from 80 % to 10 % with nothing in the loss to show it. ``Monitor`` scores the method's
``encoder`` with a function it is given (the API passes a kNN score on a small labelled set,
``evaluate.knn.knn_monitor``) before the first step (the starting weights) and every ``every``
optimizer steps, and at the end. Each score goes to TensorBoard and the CSV log
(``monitor/<name>``) and to a line on stderr; the weights of the best check are kept (a CPU copy,
saved in the checkpoint so a resumed run keeps them); after ``patience`` checks in a row more than
``min_delta`` below the best, training stops with a message saying so.

The scoring function is injected, so this layer (the engine) needs nothing from the evaluation
layer above it. Under DDP every rank scores (the features are sharded over the ranks and gathered),
so all ranks see the same score and stop together.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn


class Monitor(Callback):
    """Scores ``module.method.encoder`` with ``score(encoder) -> float`` (higher is better)."""

    def __init__(self, score: Callable[[nn.Module], float], *, every: int = 100, patience: int = 3,
                 min_delta: float = 0.02, name: str = "knn_top1", print_lines: bool = True):
        self.score, self.every, self.patience, self.min_delta = score, max(1, every), patience, min_delta
        self.name, self.print_lines = name, print_lines
        self.history: list[tuple[int, float]] = []  # (step, score) of every check, step 0 first
        self.best_step, self.best_score = -1, -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.fallen = 0  # checks in a row below best - min_delta
        self.stopped: str | None = None  # why training was stopped, when it was

    @property
    def state_key(self) -> str:
        return f"Monitor[{self.name}]"

    def _say(self, trainer: L.Trainer, msg: str) -> None:
        if self.print_lines and trainer.is_global_zero:
            print(msg, file=sys.stderr, flush=True)

    def check(self, trainer: L.Trainer, module: L.LightningModule) -> float:
        """Score the encoder now; log it, keep the weights if best, stop after ``patience`` falls."""
        encoder = module.method.encoder
        value = float(self.score(encoder))
        step = int(trainer.global_step)
        self.history.append((step, value))
        for logger in trainer.loggers:
            logger.log_metrics({f"monitor/{self.name}": value}, step=step)
        if value > self.best_score:
            self.best_step, self.best_score, self.fallen = step, value, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        elif value < self.best_score - self.min_delta:
            self.fallen += 1
        else:
            self.fallen = 0
        fallen = f"; below it {self.fallen}/{self.patience} checks" if self.fallen else ""
        self._say(trainer, f"monitor step {step}: {self.name} {value:.4f} (best {self.best_score:.4f} at step "
                           f"{self.best_step}{fallen})")
        if self.fallen >= self.patience:
            recent = ", ".join(f"{v:.4f}" for _, v in self.history[-self.patience:])
            self.stopped = (f"stopped at step {step}: {self.name} fell below the best {self.best_score:.4f} "
                            f"(step {self.best_step}) by more than {self.min_delta:g} for {self.fallen} checks in a "
                            f"row ({recent}); encoder.safetensors holds the step-{self.best_step} weights")
            self._say(trainer, f"monitor: {self.stopped}")
            trainer.should_stop = True
        return value

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.history or self.history[-1][0] != trainer.global_step:  # step 0: the starting weights
            self.check(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0 and self.history[-1][0] != step:
            self.check(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.history and self.history[-1][0] != trainer.global_step:
            self.check(trainer, module)

    def state_dict(self) -> dict[str, Any]:
        return {"history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 2),
                "best_step": self.best_step, "best_score": self.best_score, "fallen": self.fallen,
                "best_state": self.best_state or {}, "stopped": self.stopped or ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state["history"].tolist()]
        self.best_step, self.best_score = int(state["best_step"]), float(state["best_score"])
        self.fallen = int(state["fallen"])
        self.best_state = dict(state["best_state"]) or None
        self.stopped = None  # a resumed run goes on until the guard trips again


__all__ = ["Monitor"]
