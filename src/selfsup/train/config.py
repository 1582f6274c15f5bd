"""Training options: length (epochs, steps or a wall-clock budget), optimiser, precision, devices."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")


def parse_duration(text: str | float | int) -> float:
    """'90s', '10m', '1h30m', '2.5m' or a plain number of seconds -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s.replace(" ", ""):
        raise ValueError(f"cannot read duration {text!r}; write e.g. 90s, 10m or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)



# What continuing from public weights (`pretrain --init`) changes unless the run sets it: a learning
# rate an order of magnitude below training from scratch, a longer warmup, and layer-wise decay
# (0.75, as in MAE's and BEiT's fine-tuning), so the early, most general layers move least and the
# starting features are not washed out in the first steps (the forgetting dinov2#204 reports).
CONTINUE_DEFAULTS = {"lr": 1e-4, "warmup": 0.1, "layer_decay": 0.75}


class TrainConfig(BaseModel):
    """How long and how to optimise. Exactly one of epochs / steps / budget sets the length."""

    model_config = ConfigDict(extra="forbid")
    epochs: int | None = None
    steps: int | None = None
    budget: str | None = None
    snapshots: list[str] = Field(
        default_factory=list, description="training times (e.g. 5m, 10m) at which to keep the encoder in snapshots/")
    clock: Literal["wall", "cpu"] = Field(
        "wall", description="what the budget counts: wall time, or this process's CPU time (use data.num_workers=0)")
    batch_size: int = 256
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="fraction of the steps spent warming up")
    min_lr: float = 0.0
    layer_decay: float = Field(1.0, gt=0.0, le=1.0, description="ViT layer-wise lr decay (train.optim); 1 = off")
    grad_clip: float | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16 on GPUs, and on CPUs with native bf16 where measured to pay (selfsup.hardware)")
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    seed: int = 0
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms: bit-exact resume")
    ckpt_every: int = 200
    ckpt_minutes: float | None = Field(5.0, description="also checkpoint this often (and 10x per budget)")
    log_every: int = 10
    max_bad_steps: int = 20
    compile: bool = False
    # the regression guard (train.monitor): kNN on a small labelled set every monitor_every steps, step 0 included
    monitor: str | None = Field(None, description="labelled data scored by kNN during training; never the test set")
    monitor_every: int = Field(100, ge=1, description="optimizer steps between monitor checks")
    monitor_patience: int = Field(3, ge=1, description="stop after this many checks in a row below the best")
    monitor_min_delta: float = Field(0.02, ge=0.0, description="a check counts as fallen below best - min_delta")
    monitor_max_samples: int = Field(2000, ge=2, description="at most this many labelled samples, stratified")

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, v: str | None) -> str | None:
        """The monitor's labelled set is a data path: refused like ``data.path`` when the config is read."""
        from selfsup.data.sources import SourceError, check_location  # noqa: PLC0415

        try:
            return None if v is None else check_location(v)
        except SourceError as e:
            raise ValueError(str(e)) from None

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("snapshots")
    @classmethod
    def _snapshots(cls, v: list[str]) -> list[str]:
        for d in v:
            parse_duration(d)
        return v

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        given = [k for k in ("epochs", "steps", "budget") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of epochs, steps or budget, not {' and '.join(given)}")
        if not given:
            self.epochs = 1
        return self
