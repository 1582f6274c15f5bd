"""The report's pictures and sections for tables and time series.

Figures, as PNG bytes like ``interpret.figures`` (matplotlib ``Figure`` on the Agg canvas, no pyplot):

- ``plot_series_reconstruction``: series with the patches the masked model hid shaded, the hidden
  values and the model's prediction of them (PatchTST's self-supervised task, ``MAE`` on series);
- ``plot_feature_errors``: a table's reconstruction error per column (``MAE``), the columns the
  encoder learned to predict from the others and those it did not;
- ``plot_anomaly_over_time``: a long series, its labelled anomalies shaded, and each detector's
  score spread over the time steps (``evaluate.outliers.window_to_points``);
- ``plot_forecasts``: lookback, truth and each model's forecast for a few test windows.

``structured_sections`` gives the report's sections for a table or series run: the reconstruction
figure of its method, and the anomaly and forecast figures that ``selfsup anomaly score`` and
``selfsup forecast`` left in ``RUN/figures/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from selfsup.data.inputs import as_inputs, rows, take
from selfsup.encoders.inference import eval_mode, module_device
from selfsup.interpret.figures import to_png

HIDDEN = "#c9d6ec"  # shading of hidden patches and labelled anomalies
COLOURS = ["#1f5fa8", "#d1495b", "#2e933c", "#edae49", "#6b4c9a", "#00798c"]


def _style(ax) -> None:
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def plot_series_reconstruction(target: np.ndarray, pred: np.ndarray, mask: np.ndarray, patch: int,
                               names: list[str] | None = None) -> bytes:
    """Rows of (n, P) patches: ``target`` (NaN = not observed), ``pred`` and ``mask`` (n,) (1 = hidden),
    one panel per row: the series (normalised scale), hidden patches shaded, the prediction on them."""
    k = len(target)
    fig = Figure(figsize=(8.0, 1.9 * k))
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        t, p, m = np.asarray(target[i]), np.asarray(pred[i]), np.asarray(mask[i])
        steps = np.arange(t.size)
        ax.plot(steps, t.reshape(-1), color="#1d2430", lw=1.1, label="series")
        for j in np.flatnonzero(m > 0):
            ax.axvspan(j * patch - 0.5, (j + 1) * patch - 0.5, color=HIDDEN, lw=0)
            seg = np.arange(j * patch, (j + 1) * patch)
            label = "prediction (hidden patches)" if j == m.argmax() else None
            ax.plot(seg, p[j], color="#d1495b", lw=1.6, label=label)
        ax.set_ylabel(names[i] if names else f"#{i}", fontsize=9)
        _style(ax)
    axes[0].legend(frameon=False, fontsize=8, loc="upper right")
    axes[-1].set_xlabel("time step (normalised per series)")
    fig.tight_layout()
    return to_png(fig)


def plot_feature_errors(names: list[str], errors: np.ndarray, kinds: list[str]) -> bytes:
    """Mean reconstruction error per column (squared error of standardised numbers, cross-entropy of
    categories), hidden cells only, sorted; the dotted line is a guess that knows nothing (1.0 for a
    standardised number)."""
    order = np.argsort(errors)[::-1][:40]
    fig = Figure(figsize=(7.5, 0.28 * len(order) + 1.2))
    ax = fig.add_subplot()
    colours = ["#1f5fa8" if kinds[i] == "numeric" else "#edae49" for i in order]
    ax.barh(np.arange(len(order)), errors[order], color=colours)
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="#5b6675", ls=":", lw=1)
    ax.set_xlabel("reconstruction error of hidden cells (blue: numeric, MSE; yellow: categorical, cross-entropy)")
    _style(ax)
    fig.tight_layout()
    return to_png(fig)


def plot_anomaly_over_time(values: np.ndarray, labels: np.ndarray | None, scores: dict[str, np.ndarray],
                           border: int | None = None, title: str = "") -> bytes:
    """A long series (its first channel) above each detector's point scores (min-max scaled), the
    labelled anomalies shaded in both and the start of the scored part marked."""
    t = np.arange(len(values))
    fig = Figure(figsize=(9.0, 4.6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    runs = []
    if labels is not None and len(labels):
        edges = np.diff(np.r_[0, np.asarray(labels, dtype=int), 0])
        runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))
    pad = max(0.0, 0.004 * len(values))  # a 12-step anomaly in 7,500 steps would be invisible
    for ax in (top, bottom):
        for a, b in runs:
            ax.axvspan(a - pad, b + pad, color="#f4c7c3", lw=0)
        if border:
            ax.axvline(border, color="#5b6675", ls="--", lw=1)
        _style(ax)
    top.plot(t, values, color="#1d2430", lw=0.7)
    top.set_ylabel("value")
    top.set_title(title + ("  (shaded: labelled anomalies; dashed: start of the scored part)" if runs else ""),
                  loc="left", fontsize=10)
    for (name, s), colour in zip(scores.items(), COLOURS, strict=False):
        s = np.asarray(s, dtype=np.float64)
        ok = np.isfinite(s)
        if ok.any():
            lo, hi = s[ok].min(), s[ok].max()
            bottom.plot(t, (s - lo) / (hi - lo + 1e-12), color=colour, lw=0.9, label=name)
    bottom.set_ylabel("score (scaled)")
    bottom.set_xlabel("time step")
    bottom.legend(frameon=False, fontsize=8, ncol=2, loc="upper left")
    fig.tight_layout()
    return to_png(fig)


def plot_forecasts(lookback: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray], title: str = "") -> bytes:
    """Rows of windows: ``lookback`` (k, L), ``truth`` (k, H) and each model's forecast (k, H)."""
    k = len(truth)
    fig = Figure(figsize=(8.5, 2.0 * k))
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    L, H = lookback.shape[1], truth.shape[1]
    for i, ax in enumerate(axes):
        ax.plot(np.arange(L), lookback[i], color="#5b6675", lw=0.9, label="lookback")
        ax.plot(np.arange(L, L + H), truth[i], color="#1d2430", lw=1.3, label="truth")
        for (name, p), colour in zip(preds.items(), COLOURS, strict=False):
            ax.plot(np.arange(L, L + H), p[i], color=colour, lw=1.2, label=name)
        ax.axvline(L - 0.5, color="#5b6675", ls=":", lw=1)
        _style(ax)
    axes[0].legend(frameon=False, fontsize=8, ncol=len(preds) + 2, loc="upper left")
    axes[0].set_title(title, loc="left", fontsize=10)
    axes[-1].set_xlabel("time step (standardised values)")
    fig.tight_layout()
    return to_png(fig)


# ----------------------------------------------------------------------------- report sections


@torch.no_grad()
def series_reconstruction(method: nn.Module, inputs, k: int = 4, seed: int = 0) -> bytes:
    """The masked-patch figure of a series ``MAE`` on the first ``k`` series of ``inputs`` (N, C, T)."""
    x = as_inputs(inputs)
    x = take(x, slice(0, min(k, rows(x)))).float().to(module_device(method))
    with torch.random.fork_rng(devices=[]), eval_mode(method):
        out = method({"series": x}, generator=torch.Generator(device=x.device).manual_seed(seed))
    B, C = x.shape[:2]  # the method's tokens are each channel's patches: (B * C, n, ...)
    target, pred, mask = (out[n].reshape(B, C, *out[n].shape[1:])[:, 0].float().cpu().numpy()
                          for n in ("target", "pred", "mask"))
    mask = mask * ~np.isnan(target).all(-1)  # a padding patch is never shown as hidden
    return plot_series_reconstruction(target, pred, mask, method.encoder.patch_size,
                                      [f"series {i}" for i in range(len(target))])


@torch.no_grad()
def table_feature_errors(method: nn.Module, inputs, schema: dict | None, passes: int = 8) -> bytes:
    """Per-column reconstruction error of a table ``MAE`` on up to 2,000 rows of ``inputs``."""
    x = as_inputs(inputs)
    x = take(x, slice(0, min(2000, rows(x))))
    device = module_device(method)
    with eval_mode(method):
        errors = method.reconstruction_errors({k: v.to(device) for k, v in x.items()}, passes=passes).float().cpu()
    mean = torch.nanmean(errors, dim=0).nan_to_num(0.0).numpy()
    schema = schema or {}
    names = [*schema.get("numeric", []), *schema.get("categorical", [])] or [f"col{i}" for i in range(len(mean))]
    kinds = ["numeric"] * len(schema.get("numeric", [])) + ["categorical"] * len(schema.get("categorical", []))
    return plot_feature_errors(names, mean, kinds or ["numeric"] * len(mean))


CAPTIONS = {
    "anomaly_over_time": ("Anomaly scores over time", "The series (its first channel) above each detector's score "
                          "per time step (a step takes the highest score of the windows holding it; each curve "
                          "scaled to [0, 1]). Shaded: the labelled anomalies. A good detector peaks inside the "
                          "shading and stays low elsewhere; ssl = this run's encoder, raw = the raw windows."),
    "forecast": ("Forecasts", "Test windows of the first channel: the lookback (grey), the truth (black) and each "
                 "model's forecast, on standardised values. ssl = linear head on this run's frozen encoder, "
                 "dlinear = one linear map from the lookback, scratch = the same network trained from random "
                 "weights."),
}


def structured_sections(run_dir: Path, method: nn.Module | None, inputs, spec, save) -> list[tuple[str, str, str]]:
    """(id, title, body HTML) of the table / series sections: the method's reconstructions (when it
    is a masked model and ``inputs`` are given) and the figures other commands left in ``figures/``."""
    out = []
    if method is not None and inputs is not None and rows(as_inputs(inputs)):
        if spec.modality == "series" and hasattr(method, "reconstruction_errors"):
            png = series_reconstruction(method, inputs)
            ratio = getattr(method, "mask_ratio", None)
            cap = (f"Masked patch reconstruction (PatchTST's self-supervised task): {ratio:.0%} of each series' "
                   f"patches of {method.encoder.patch_size} steps are hidden (shaded) and the red line is the model's "
                   "prediction of them from the rest, in the per-series normalised scale. Predictions that follow "
                   "the hidden shape mean the encoder learned the series' structure; flat lines mean it has not.")
            out.append(("reconstructions", "Series reconstructions", save("series_reconstructions", png, cap,
                                                                         "series reconstructions")))
        if spec.modality == "table" and hasattr(method, "reconstruction_errors"):
            png = table_feature_errors(method, inputs, spec.schema)
            cap = ("How well the masked model predicts each column from the others when it is hidden, averaged over "
                   "random masks: mean squared error of standardised numbers (blue) and cross-entropy of categories "
                   "(yellow). Below the dotted line a numeric column is predicted better than by its mean; columns "
                   "near or above it carry information the others do not, or were not learned.")
            out.append(("feature-errors", "Per-feature reconstruction error", save("feature_errors", png, cap,
                                                                                  "per-feature reconstruction error")))
    for name, (title, cap) in CAPTIONS.items():
        path = Path(run_dir) / "figures" / f"{name}.png"
        if path.is_file():
            out.append((name.replace("_", "-"), title, save(name, path.read_bytes(), cap, title)))
    return out


__all__ = [
    "plot_anomaly_over_time", "plot_feature_errors", "plot_forecasts", "plot_series_reconstruction",
    "series_reconstruction", "structured_sections", "table_feature_errors",
]
