"""Long-horizon forecasting: the standard splits, a linear baseline, and a linear head on a
pretrained series encoder.

Protocol of the long-horizon benchmarks (Zhou et al. 2021, Informer; followed by DLinear and
PatchTST): ETT hourly data is split 12 / 4 / 4 months (rows [0, 8640) train, [8640, 11520)
validation, [11520, 14400) test; x4 for 15-minute data), other sets 70 / 10 / 20 % in time order.
Every window of a split forecasts ``horizon`` steps from the ``lookback`` steps before them, so the
validation and test splits start ``lookback`` rows early. Values are standardised per channel with
the training rows' mean and std, and MSE / MAE are reported on that scale.

``fit_linear_forecaster`` is the linear baseline (Zeng et al. 2023, "Are Transformers Effective
for Time Series Forecasting?"): one linear map from the lookback window to the horizon, shared by
all channels. DLinear splits the input into a moving-average trend and a remainder with a linear
map each, but both parts are linear in the input, so the sum is again one linear map: its least
squares optimum, solved here in closed form (ridge 1e-6), is what DLinear's gradient descent
approaches.

``PatchForecaster`` is PatchTST's fine-tuning set-up (Nie et al. 2023): the pretrained encoder's
patch tokens of each channel, flattened, go through one linear layer to the horizon, in the
RevIN-normalised scale, which is then undone. ``train_forecaster`` trains the head alone (linear
probing) or head and encoder (fine-tuning). The closed-form linear heads (DLinear-style and on a
frozen encoder) are ``evaluate.forecast_linear``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from selfsup.data.sources.windows import forecast_borders
from selfsup.hardware import autocast


def standardize(values: np.ndarray, train_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, T) -> (values standardised with rows [0, train_end) per channel, mean (C,), std (C,))."""
    train = values[:, :train_end].astype(np.float64)
    mean, std = train.mean(1), train.std(1)
    std = np.where(std > 1e-8, std, 1.0)
    return ((values - mean[:, None]) / std[:, None]).astype(np.float32), mean, std


def forecast_windows(values: np.ndarray, start: int, end: int, lookback: int, horizon: int,
                     stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All (input, target) windows inside rows [start, end): X (N, C, lookback), Y (N, C, horizon),
    N = (end - start - lookback - horizon) // stride + 1. Views into ``values`` (no copy)."""
    seg = values[:, start:end]
    win = np.lib.stride_tricks.sliding_window_view(seg, lookback + horizon, axis=1)[:, ::stride]  # (C, N, L + H)
    win = win.transpose(1, 0, 2)
    return win[..., :lookback], win[..., lookback:]


def forecast_errors(pred, true) -> dict[str, float]:
    """Mean squared and mean absolute error over every window, channel and step."""
    p = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    t = true.detach().cpu().numpy() if hasattr(true, "detach") else np.asarray(true)
    d = p.astype(np.float64) - t.astype(np.float64)
    return {"mse": float((d**2).mean()), "mae": float(np.abs(d).mean())}


@dataclass
class LinearForecaster:
    """y = x @ weight + bias for each channel's lookback window x (L,): weight (L, H), bias (H,)."""

    weight: np.ndarray
    bias: np.ndarray

    def predict(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(N, C, L) -> (N, C, H)."""
        out = np.empty((*x.shape[:2], self.weight.shape[1]), np.float32)
        for i in range(0, len(x), batch_size):
            out[i : i + batch_size] = np.asarray(x[i : i + batch_size], np.float64) @ self.weight + self.bias
        return out


def fit_linear_forecaster(
    x: np.ndarray, y: np.ndarray, ridge: float = 1e-6, batch_size: int = 4096
) -> LinearForecaster:
    """Least squares (with a tiny ridge, relative to the mean diagonal) from windows X (N, C, L) to
    targets Y (N, C, H), channels pooled; accumulated in batches so memory stays O(L^2)."""
    L, H = x.shape[-1], y.shape[-1]
    gram, cross = np.zeros((L + 1, L + 1)), np.zeros((L + 1, H))
    for i in range(0, len(x), batch_size):
        a = np.asarray(x[i : i + batch_size], np.float64).reshape(-1, L)
        a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
        gram += a.T @ a
        cross += a.T @ np.asarray(y[i : i + batch_size], np.float64).reshape(-1, H)
    reg = ridge * np.trace(gram) / (L + 1) * np.eye(L + 1)
    reg[-1, -1] = 0.0  # no penalty on the bias
    w = np.linalg.solve(gram + reg, cross)
    return LinearForecaster(w[:-1], w[-1])


class PatchForecaster(nn.Module):
    """A PatchTST encoder + flatten head: (B, C, L) -> (B, C, horizon), in the data's scale."""

    def __init__(self, encoder: nn.Module, lookback: int, horizon: int, head_dropout: float = 0.0):
        super().__init__()
        self.encoder, self.lookback, self.horizon = encoder, lookback, horizon
        n = encoder.num_patches(lookback)
        self.head = nn.Sequential(nn.Flatten(-2), nn.Dropout(head_dropout), nn.Linear(n * encoder.embed_dim, horizon))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        patches, mean, std = enc.patches(x)
        B, C, n, _ = patches.shape
        tokens = enc.forward_tokens(enc.embed_patches(patches)).reshape(B, C, n, -1)
        return self.head(tokens) * std + mean


def train_forecaster(
    model: PatchForecaster,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int = 5000,
    lr: float = 1e-3,
    batch_size: int = 32,
    freeze_encoder: bool = False,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    eval_every: int = 50,
    patience: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    progress: Callable[[str], None] | None = None,
    every_s: float = 15.0,
) -> tuple[PatchForecaster, dict]:
    """Adam on the MSE of windows X (N, C, L) -> Y (N, C, H) in batches drawn at random;
    ``freeze_encoder`` trains the head only. With ``val`` (windows of the validation split) the
    validation MSE is checked every ``eval_every`` steps: training stops once it has not improved
    for ``patience`` checks (at most ``steps``), and the best weights are kept, so a network that
    learns slowly (from scratch) trains as long as it improves. Without ``val`` it runs ``steps``.
    Runs on ``device`` under ``hardware.autocast(device, precision)``, the rule of every fine-tune
    (bf16 on a GPU; fp32 master weights; the loss in fp32).
    ``progress`` gets a line at a validation check at most every ``every_s`` seconds.
    Returns the model in eval mode and {"steps" run, "best_step", "val_mse", "hit_cap"}."""
    g = torch.Generator().manual_seed(seed)
    said = time.monotonic()
    model.to(device).train()
    for p in model.encoder.parameters():
        p.requires_grad_(not freeze_encoder)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    best, best_state, best_step, since, step = float("inf"), None, 0, 0, 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g).numpy()
        xb = torch.tensor(np.asarray(x[idx]), dtype=torch.float32, device=device)  # a copy of read-only views
        yb = torch.tensor(np.asarray(y[idx]), dtype=torch.float32, device=device)
        with autocast(device, precision):
            pred = model(xb)
        loss = torch.nn.functional.mse_loss(pred.float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if val is not None and (step % eval_every == 0 or step == steps):
            mse = forecast_errors(predict(model, val[0], device=device, precision=precision), val[1])["mse"]
            model.train()
            if progress is not None and time.monotonic() - said >= every_s:
                said = time.monotonic()
                progress(f"  step {step} (at most {steps})  validation mse {mse:.4f}, best so far "
                         f"{min(best, mse):.4f}")
            if mse < best:
                best, best_step, best_state, since = mse, step, copy.deepcopy(model.state_dict()), 0
            elif (since := since + 1) >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.encoder.parameters():
        p.requires_grad_(True)
    return model.eval(), {"steps": step, "best_step": best_step or step, "val_mse": best if val is not None else None,
                          "hit_cap": val is not None and best_step == steps}


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256, device: str | torch.device = "cpu",
            precision: str = "auto") -> np.ndarray:
    """Forecasts (N, C, H) float32 of windows (N, C, L), in eval mode on ``device`` (under ``hardware.autocast``)."""
    was = model.training
    model.eval()
    with autocast(device, precision):
        out = [model(torch.tensor(np.asarray(x[i : i + batch_size]), dtype=torch.float32, device=device)).float().cpu()
               for i in range(0, len(x), batch_size)]  # a copy: windows are read-only views
    model.train(was)
    return torch.cat(out).numpy()


__all__ = [
    "LinearForecaster", "PatchForecaster", "fit_linear_forecaster", "forecast_borders", "forecast_errors",
    "forecast_windows", "predict", "standardize", "train_forecaster",
]
