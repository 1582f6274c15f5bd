"""Running a network for inference: eval mode that is always restored, inputs in batches.

Every consumer of a trained encoder (features, fine-tuned classifiers, PatchCore, attention maps,
zero-shot, ONNX checks) runs it through ``eval_mode`` and ``encode_images``, so the rules live
here once: no gradients, eval mode for the call and the caller's mode back afterwards, images
turned into the encoder's input scale (``data.spec``) batch by batch on its device. Table and
series inputs (``data.inputs``: a tensor or a dict of tensors) go through the same function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from selfsup.data.inputs import Inputs, as_inputs, rows, take, to_device
from selfsup.data.spec import to_float
from selfsup.hardware import autocast


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(m):`` eval mode and no gradients inside; the train/eval mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def batch_input(encoder: nn.Module, batch: Inputs) -> Inputs:
    """A batch of inputs on the encoder's device -> what ``encoder`` reads: uint8 images become float
    in [0, 1] and then its input scale (``encoders.to_input``); table and series inputs pass."""
    from selfsup.encoders import to_input

    if isinstance(batch, dict):
        return to_input(encoder, batch)
    return to_input(encoder, to_float(batch))


def progress_ticker(log: Callable[[str], None] | None, what: str = "encoded",
                    every: float = 10.0) -> Callable[[int, int | None], None]:
    """``tick(done, total)``: a line to ``log`` at most every ``every`` seconds with the rate and the time
    left ("encoded 2048/10000 samples (41/s, about 194s left)"); nothing when ``log`` is None."""
    t0 = last = time.monotonic()

    def tick(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if log is None or now - last < every:
            return
        last = now
        rate = done / max(now - t0, 1e-9)
        left = f", about {(total - done) / rate:.0f}s left" if total and rate > 0 else ""
        log(f"{what} {done}{f'/{total}' if total else ''} samples ({rate:.0f}/s{left})")

    return tick


def encode_images(
    module: nn.Module,
    images: np.ndarray | torch.Tensor | dict,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    empty: tuple[int, ...] = (0,),
    precision: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """uint8 images (N, C, H, W), or any modality's inputs (``data.inputs``: series (N, C, T), a table's
    dict) -> ``fn(x)`` of each batch concatenated, float32 on the CPU.

    ``x`` is a batch moved to ``device`` (default the module's) and turned into what the encoder
    reads (``batch_input``; the encoder is ``module.encoder`` for a model that wraps one); ``fn``
    defaults to ``module`` itself. Runs under ``eval_mode(module)`` and the autocast of ``precision``
    (``hardware.autocast``). With no inputs the result is ``torch.empty(empty)``. ``progress`` gets a
    line with the rate and the time left at most every 10 s (``progress_ticker``).
    """
    images = as_inputs(images)
    device = torch.device(device) if device is not None else module_device(module)
    fn, encoder = fn or module, getattr(module, "encoder", module)
    n, tick, out = rows(images), progress_ticker(progress), []
    with eval_mode(module), autocast(device, precision):
        for i in range(0, n, batch_size):
            batch = to_device(take(images, slice(i, i + batch_size)), device)
            out.append(fn(batch_input(encoder, batch)).float().cpu())
            tick(min(i + batch_size, n), n)
    return torch.cat(out) if out else torch.empty(empty)


__all__ = ["batch_input", "encode_images", "eval_mode", "module_device", "progress_ticker"]
