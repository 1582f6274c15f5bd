"""The report's pictures, as PNG bytes.

Every ``plot_*`` function takes plain arrays and returns PNG bytes (``data_uri`` turns them into
an ``<img src>``). Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never
through pyplot, so nothing global (backend, open figures) changes and no display is needed.

Images come in as uint8, uint16 or [0, 1] float (N, C, H, W), numpy or torch, any C (``as_hwc``).
Small images (digits are 8 px, CIFAR 32 px) are enlarged by whole-pixel repetition (nearest) so
each pixel stays a crisp square on screen.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from selfsup.evaluate.records import BUDGET_KEYS, ENCODERS, METRICS, budget_kind, rank_in

DPI = 110
MASK_TINT = np.array([0.55, 0.66, 0.85])  # hidden MAE patches: a blue-grey no image pixel has
ENCODER_STYLE = {"ssl": ("-", "o"), "scratch": ("--", "s"), "raw": (":", "^"),
                 "foundation": ("-.", "D")}  # line style, marker

# ----------------------------------------------------------------------------- plumbing


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (white background, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def data_uri(png: bytes) -> str:
    """PNG bytes -> ``data:image/png;base64,...`` for an offline ``<img src>``."""
    return "data:image/png;base64," + png_base64(png)


def as_hwc(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8, uint16 or [0, 1] float (N, C, H, W) -> float32 (N, H, W, C) in [0, 1], C 1 or 3: images
    with another number of channels (multispectral) are shown by their mean, in grey."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    x = x.astype(np.float32) / {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(x.dtype, 1.0)
    x = x if x.shape[1] in (1, 3) else x.mean(axis=1, keepdims=True)
    return np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)


def upscale_factor(size: int, target: int = 96) -> int:
    """Whole-pixel factor that brings an image side of ``size`` to at least ``target``."""
    return max(1, math.ceil(target / max(size, 1)))


def enlarge(x: np.ndarray, f: int) -> np.ndarray:
    """Nearest-neighbour enlargement of the first two axes (H, W, ...) by an integer factor."""
    return x if f == 1 else np.repeat(np.repeat(x, f, axis=0), f, axis=1)


def rgb(img: np.ndarray) -> np.ndarray:
    """(H, W, 1) or (H, W, 3) -> (H, W, 3)."""
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]


def show(ax, img: np.ndarray) -> None:
    """Draw an (H, W, C) image in [0, 1] without axes; grey images in grey."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    bare(ax)


def bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def frame(ax, color: str, width: float = 3.0) -> None:
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_edgecolor(color)
        s.set_linewidth(width)


def resize_map(m: np.ndarray | torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """(H', W') map -> (H, W) by nearest (patch blocks) or bilinear interpolation."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=size, mode=mode, **kw)[0, 0].numpy()


# ----------------------------------------------------------------------------- loss curve


def read_loss_history(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, losses) from ``loss_history.json`` ([[step, loss], ...]), else from Lightning's
    ``logs/csv/metrics.csv`` (column ``train/loss``); None when neither has any."""
    run_dir = Path(run_dir)
    pairs: list[tuple[float, float]] = []
    hist = run_dir / "loss_history.json"
    if hist.exists():
        try:
            pairs = [(float(s), float(v)) for s, v in json.loads(hist.read_text())]
        except (ValueError, TypeError):
            pairs = []
    csv_path = run_dir / "logs" / "csv" / "metrics.csv"
    if not pairs and csv_path.exists():
        with csv_path.open(newline="") as f:
            for row in csv.DictReader(f):
                loss = row.get("train/loss") or row.get("train_loss") or row.get("loss")
                if loss not in (None, ""):
                    pairs.append((float(row.get("step") or len(pairs)), float(loss)))
    pairs = [(s, v) for s, v in pairs if math.isfinite(v)]
    if not pairs:
        return None
    arr = np.asarray(sorted(pairs), dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def smooth(values: np.ndarray, span: int) -> np.ndarray:
    """Bias-corrected exponential moving average with a window of about ``span`` points."""
    alpha, avg, weight, out = 2.0 / (span + 1), 0.0, 0.0, np.empty_like(values)
    for i, v in enumerate(values):
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = avg / weight
    return out


def plot_loss_curve(steps: np.ndarray, losses: np.ndarray, title: str = "Pretraining loss") -> bytes:
    """Raw loss per logged step (faint) and its moving average (bold); log y when it spans 10x."""
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot()
    span = max(3, len(losses) // 25)
    ax.plot(steps, losses, color="#9ab8d8", lw=0.9, label="logged loss")
    if len(losses) > 2 * span:
        ax.plot(steps, smooth(losses, span), color="#1f5fa8", lw=2.0, label=f"moving average ({span} points)")
    if losses.min() > 0 and losses.max() / losses.min() > 30:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9)
    return to_png(fig)


# ----------------------------------------------------------------------------- MAE reconstructions


def plot_reconstructions(
    images: np.ndarray | torch.Tensor,
    outputs: dict[str, np.ndarray | torch.Tensor],
    max_images: int = 8,
) -> bytes:
    """Grid: rows original / masked input / reconstruction / pasted, one column per image.

    ``images`` [0, 1] float or uint8 (B, C, H, W); ``outputs`` MAE.reconstruct's dict ("masked",
    "reconstruction", "pasted", each (B, C, H, W) in [0, 1], and "mask" (B, H, W), true where a
    patch was hidden). Hidden patches are tinted blue-grey.
    """
    img = as_hwc(images)[:max_images]
    out = {k: as_hwc(outputs[k])[:max_images] for k in ("masked", "reconstruction", "pasted")}
    mask = np.asarray(outputs["mask"])[:max_images].astype(bool)
    masked = np.where(mask[..., None], MASK_TINT, np.stack([rgb(m) for m in out["masked"]]))
    rows = [
        ("original", img),
        ("masked input", masked),
        ("reconstruction", out["reconstruction"]),
        ("visible + reconstructed", out["pasted"]),
    ]
    n = len(img)
    f = upscale_factor(img.shape[1])
    fig = Figure(figsize=(1.6 + 1.25 * n, 1.3 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.08})
    for r, (name, arr) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            show(ax, enlarge(arr[c], f))
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10, labelpad=6)
    return to_png(fig)


# ----------------------------------------------------------------------------- attention


def overlay(ax, img: np.ndarray, heat: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "inferno", alpha: float = 0.6):
    """Image (H, W, C) in grey underneath, ``heat`` (H, W) in colour on top; returns the artist."""
    grey = rgb(img).mean(-1)
    ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    art = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="nearest")
    bare(ax)
    return art


def attention_panel(ax, img: np.ndarray, heat: np.ndarray) -> None:
    """A patch-level map (H', W') over an image (H, W, C) enlarged to the map's size.

    Grey images: the map drawn opaque with the image's shape outlined on top (blending colours into
    a grey image makes both unreadable); RGB images: the map blended over a greyed copy.
    """
    if img.shape[-1] == 1:
        ax.imshow(heat, cmap="inferno", interpolation="nearest")
        g = resize_map(img[..., 0], heat.shape, "bilinear")  # smooth outline, not pixel staircase
        if g.max() - g.min() > 1e-3:
            ax.contour(g, levels=[0.5 * (g.min() + g.max())], colors="#4fd1ff", linewidths=1.0)
        bare(ax)
    else:
        overlay(ax, enlarge(img, heat.shape[0] // img.shape[0]), heat, alpha=0.6)


def plot_attention(
    images: np.ndarray | torch.Tensor,
    heads: np.ndarray | torch.Tensor,
    rollout: np.ndarray | torch.Tensor,
    max_images: int = 4,
    max_heads: int = 6,
) -> bytes:
    """One row per image: the image, attention rollout, then last-layer CLS attention per head.

    ``heads`` (B, h, gh, gw), ``rollout`` (B, gh, gw). Each map is scaled to its own min..max
    (bright = more attention) and drawn as patch-sized blocks.
    """
    img = as_hwc(images)[:max_images]
    heads = np.asarray(heads, dtype=np.float32)[:max_images, :max_heads]
    rollout = np.asarray(rollout, dtype=np.float32)[:max_images]
    B, h = heads.shape[:2]
    f = upscale_factor(img.shape[1])
    size = (img.shape[1] * f, img.shape[2] * f)
    cols = ["image", "rollout"] + [f"head {i + 1}" for i in range(h)]
    fig = Figure(figsize=(1.5 * len(cols), 1.55 * B + 0.3))
    axes = fig.subplots(B, len(cols), squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.06})
    for b in range(B):
        show(axes[b, 0], enlarge(img[b], f))
        for c, m in enumerate([rollout[b], *heads[b]], start=1):
            attention_panel(axes[b, c], img[b], resize_map(m, size, "nearest"))
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=10)
    return to_png(fig)


# ----------------------------------------------------------------------------- embeddings


def class_colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_embedding(
    maps: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> bytes:
    """Side-by-side 2-D scatter plots (name -> coordinates (N, 2)), points coloured by label.

    Up to 20 classes get distinct colours and a legend (with ``class_names`` when given); more get
    a continuous colour scale. Without labels all points share one colour.
    """
    names = list(maps)
    n = len(next(iter(maps.values()))) if maps else 0
    size = 30 if n <= 200 else 20 if n <= 600 else 14
    fig = Figure(figsize=(4.6 * len(names) + (1.6 if labels is not None else 0.0), 4.4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    classes = np.unique(labels) if labels is not None else np.array([])
    handles = []
    for ax, name in zip(axes, names, strict=True):
        xy = np.asarray(maps[name])
        if labels is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, color="#1f5fa8", alpha=0.7, linewidths=0)
        elif len(classes) <= 20:
            colors = class_colors(len(classes))
            handles = []
            for i, c in enumerate(classes):
                sel = labels == c
                label = class_names[int(c)] if class_names and 0 <= int(c) < len(class_names) else str(c)
                handles.append(ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=colors[i], alpha=0.8,
                                          linewidths=0, label=label))
        else:
            art = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=labels, cmap="viridis", alpha=0.8, linewidths=0)
            fig.colorbar(art, ax=ax, label="label")
        ax.set_title(name, loc="left", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[["top", "right"]].set_visible(False)
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                   markerscale=1.5, fontsize=9, title="class")
    fig.tight_layout()
    return to_png(fig)


# ----------------------------------------------------------------------------- nearest neighbours


def plot_neighbours(
    images: np.ndarray | torch.Tensor,
    queries: np.ndarray,
    neighbours: np.ndarray,
    similarities: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> bytes:
    """One row per query: the query image, then its neighbours, most similar first.

    ``queries`` (Q,) and ``neighbours`` (Q, k) index ``images`` (N, C, H, W). With labels, a
    neighbour is framed green when its class matches the query's and red when not.
    """
    img = as_hwc(images)
    Q, k = neighbours.shape
    f = upscale_factor(img.shape[1], 72)

    def name(i: int) -> str:
        if labels is None:
            return ""
        c = int(labels[i])
        return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

    fig = Figure(figsize=(1.35 * (k + 1) + 0.3, 1.75 * Q))
    axes = fig.subplots(Q, k + 1, squeeze=False, gridspec_kw={"wspace": 0.18, "hspace": 0.55})
    for r in range(Q):
        q = int(queries[r])
        show(axes[r, 0], enlarge(img[q], f))
        frame(axes[r, 0], "#222222", 2.0)
        axes[r, 0].set_title(f"query\n{name(q)}" if labels is not None else "query", fontsize=9, fontweight="bold")
        for c in range(k):
            j = int(neighbours[r, c])
            ax = axes[r, c + 1]
            show(ax, enlarge(img[j], f))
            text = f"cos {similarities[r, c]:.3f}" if similarities is not None else ""
            if labels is not None:
                frame(ax, "#2e9d4e" if labels[j] == labels[q] else "#d1343b")
                text = f"{name(j)}\n{text}" if text else name(j)
            ax.set_title(text, fontsize=8)
    return to_png(fig)


# ----------------------------------------------------------------------------- anomaly heatmaps


def plot_anomaly(
    images: np.ndarray | torch.Tensor,
    heatmaps: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor | None = None,
    scores: np.ndarray | list[float] | None = None,
    names: list[str] | None = None,
    max_images: int = 8,
) -> bytes:
    """Two rows per image column: the image, and the anomaly heatmap over it.

    ``heatmaps`` (N, h, w) are resized (bilinear) to the image and share one colour scale (so
    columns compare); ``masks`` (N, H, W) ground truth is outlined in white; ``scores`` (N,) and
    ``names`` (e.g. the defect type) title each column.
    """
    img = as_hwc(images)[:max_images]
    heat = np.asarray(heatmaps.detach().cpu() if isinstance(heatmaps, torch.Tensor) else heatmaps,
                      dtype=np.float32)[:max_images]
    n, H, W = len(img), img.shape[1], img.shape[2]
    f = upscale_factor(H, 96)
    size = (H * f, W * f)
    big_heat = np.stack([resize_map(h, size, "bilinear") for h in heat])
    vmin, vmax = float(np.percentile(big_heat, 1)), float(np.percentile(big_heat, 99.5))
    fig = Figure(figsize=(1.65 * n + 1.0, 3.7))
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.1})
    art = None
    for i in range(n):
        big = enlarge(img[i], f)
        show(axes[0, i], big)
        art = overlay(axes[1, i], big, big_heat[i], vmin=vmin, vmax=max(vmax, vmin + 1e-9), cmap="jet", alpha=0.5)
        if masks is not None:
            m = np.asarray(masks[i].cpu() if isinstance(masks, torch.Tensor) else masks[i]).astype(np.float32)
            m = enlarge(m, f) if m.shape == (H, W) else resize_map(m, size, "nearest")
            if m.any():
                axes[1, i].contour(m, levels=[0.5], colors="white", linewidths=1.6)
        title = [names[i]] if names else []
        if scores is not None:
            title.append(f"score {float(scores[i]):.3g}")
        axes[0, i].set_title("\n".join(title), fontsize=9)
    axes[0, 0].set_ylabel("image", fontsize=10)
    axes[1, 0].set_ylabel("heatmap", fontsize=10)
    if art is not None:  # an opaque colour bar: the blended one would look paler than the scale is
        solid = matplotlib.cm.ScalarMappable(norm=art.norm, cmap=art.get_cmap())
        fig.colorbar(solid, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="anomaly score")
    return to_png(fig)


# ----------------------------------------------------------------------------- label efficiency


def curve_records(records: list[dict]) -> list[dict]:
    """Records that belong on a label-efficiency curve: few-label protocols with a budget."""
    return [r for r in records if budget_kind(r) and r.get("protocol") not in ("pretrain", "anomaly")
            and r.get("mean") is not None]


def curve_metrics(records: list[dict], metric: str | None = None, limit: int = 2) -> list[str]:
    """Metrics to plot: ``metric`` if given, else top1 / auroc / others in that order."""
    present = list(dict.fromkeys(r["metric"] for r in curve_records(records)))
    if metric is not None:
        return [metric] if metric in present else []
    return sorted(present, key=lambda m: rank_in(METRICS, m))[:limit]


def plot_label_efficiency(records: list[dict], metric: str | None = None) -> bytes | None:
    """Mean ± std vs label budget (log x), one line per protocol (colour) and encoder (style).

    One panel per (budget kind, metric) that has at least two budgets (a single fraction next to a
    shots panel counts): shots are labels per class, label fractions are shown in %. None when no
    panel qualifies.
    """
    recs = curve_records(records)
    panels = []
    for kind in BUDGET_KEYS:
        for m in curve_metrics(recs, metric):
            sel = [r for r in recs if budget_kind(r) == kind and r["metric"] == m]
            n = len({r[kind] for r in sel})
            # a lone fraction (e.g. 100%) still gets a panel beside a shots curve, as points
            if n >= 2 or (n == 1 and kind == "label_fraction" and panels):
                panels.append((kind, m, sel))
    if not panels:
        return None
    tasks = sorted({str(r.get("task", "")) for r in recs})
    protocols = list(dict.fromkeys(r.get("protocol", "") for r in recs))
    pcolor = dict(zip(protocols, class_colors(len(protocols)), strict=True))
    fig = Figure(figsize=(5.4 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    legend: dict[str, object] = {}
    for ax, (kind, m, sel) in zip(axes, panels, strict=True):
        series: dict[tuple, list[dict]] = {}
        for r in sel:
            key = (r.get("task", ""), r.get("protocol", ""), r.get("encoder", ""), r.get("peer"))
            series.setdefault(key, []).append(r)
        xs_all: set[float] = set()
        def order(kv: tuple) -> tuple:
            task, protocol, encoder, peer = kv[0]
            return str(task), protocols.index(protocol), rank_in(ENCODERS, encoder), str(peer)

        for i, (key, rs) in enumerate(sorted(series.items(), key=order)):
            task, protocol, encoder, peer = key
            rs = sorted(rs, key=lambda r: r[kind])
            x = np.array([r[kind] * (100.0 if kind == "label_fraction" else 1.0) for r in rs], dtype=float)
            xs_all.update(x.tolist())
            jitter = 1.0 + 0.025 * (i - (len(series) - 1) / 2)  # keep error bars apart on log x
            ls, marker = ENCODER_STYLE.get(encoder, (":", "x"))
            label = f"{protocol} · {encoder}" + (f" ({peer})" if peer else "")
            label += f" [{task}]" if len(tasks) > 1 else ""
            art = ax.errorbar(x * jitter, [r["mean"] for r in rs], yerr=[r.get("std", 0.0) or 0.0 for r in rs],
                              color=pcolor[protocol], ls=ls, marker=marker, ms=5, lw=1.6, capsize=3, label=label)
            legend.setdefault(label, art)
        ax.set_xscale("log")
        ticks = sorted(xs_all)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}%" if kind == "label_fraction" else f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labels per class" if kind == "shots" else "labelled fraction of the training set")
        ax.set_ylabel(METRICS.get(m, m))
        ax.set_title(f"{METRICS.get(m, m)} vs labels", loc="left", fontsize=11)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.legend(list(legend.values()), list(legend), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=max(1, min(4, len(protocols))), frameon=False, fontsize=9)
    fig.tight_layout()
    return to_png(fig)


__all__ = [
    "to_png",
    "png_base64",
    "data_uri",
    "as_hwc",
    "read_loss_history",
    "plot_loss_curve",
    "plot_reconstructions",
    "plot_attention",
    "plot_embedding",
    "plot_neighbours",
    "plot_anomaly",
    "plot_label_efficiency",
    "curve_records",
]
