"""``report.html``: one self-contained page that shows what a run learned.

Everything is inline (CSS, figures as base64 PNG data URIs), so the file opens offline and can be
mailed around. Sections appear only when their inputs exist: the summary needs ``config.yaml``,
the results table and label-efficiency curve ``metrics.json``, the loss curve
``loss_history.json`` or Lightning's CSV log, reconstructions an MAE-like ``method`` and sample
images, attention maps a ViT encoder, the embedding map and neighbour gallery sample images, and
the anomaly section an ``anomaly`` dict. Each figure is also saved to ``run_dir/figures/``.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from selfsup.data.inputs import rows, take
from selfsup.data.spec import as_tensor, to_float
from selfsup.encoders.inference import eval_mode, module_device
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.records import (
    ENCODERS,
    METRICS,
    PROTOCOLS,
    budget,
    budget_order,
    column,
    load_records,
    lower_is_better,
    rank_in,
)
from selfsup.files import write_bytes, write_text
from selfsup.interpret import figures as fg
from selfsup.interpret.attention import is_vit, vit_attention
from selfsup.interpret.embedding import nearest_neighbours, pca, pick_queries, tsne
from selfsup.interpret.structured import structured_sections


@dataclass
class Section:
    id: str
    title: str
    body: str


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


class FigureWriter:
    """Saves each figure to ``figures/<name>.png`` and returns its ``<figure>`` HTML."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, png: bytes, caption: str, alt: str) -> str:
        write_bytes(self.folder / f"{name}.png", png)
        return (f'<figure><img src="{fg.data_uri(png)}" alt="{esc(alt)}">'
                f"<figcaption>{caption}</figcaption></figure>")


# ----------------------------------------------------------------------------- summary


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 and float(v).is_integer() else f"{v:.4g}"


def _options(d: dict, skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in skip and v is not None)


def summary_section(config: dict | None, records: list[dict], encoder: nn.Module | None, run_dir: Path) -> Section:
    """Key facts: method, encoder, data, training length, and what pretraining measured."""
    rows: list[tuple[str, str]] = [("run folder", run_dir.resolve().as_posix())]
    if config:
        m = config.get("method") or {}
        m = {"name": m} if isinstance(m, str) else m
        rows.append(("method", f"<b>{esc(m.get('name', '?'))}</b> {esc(_options(m, ('name',)))}"))
        e = config.get("encoder") or {}
        if e:
            arch = f"{e.get('name', '')} {e.get('size', '')}".strip()
            rows.append(("encoder", f"<b>{esc(arch)}</b> {esc(_options(e, ('name', 'size')))}"))
        d = config.get("data") or {}
        if d:
            shape = f"{d.get('channels')}×{d.get('image_size')}×{d.get('image_size')}" if d.get("image_size") else ""
            rows.append(("data", f"<code>{esc(d.get('path', '?'))}</code> {esc(shape)}"))
        t = config.get("train") or {}
        if t:
            length = next((f"{k} {t[k]}" for k in ("budget", "steps", "epochs") if t.get(k) is not None), "")
            rows.append(("training", esc(", ".join(x for x in (length, f"batch {t.get('batch_size')}",
                                                                    f"lr {t.get('lr')}") if x))))
    if encoder is not None:
        n = sum(p.numel() for p in encoder.parameters())
        rows.append(("encoder parameters", f"{n / 1e6:.2f} M"))
    pre = {r["metric"]: r["mean"] for r in records if r.get("protocol") == "pretrain"}
    if pre:
        facts = []
        if "steps" in pre:
            facts.append(f"{_fmt(pre['steps'])} steps")
        seconds = pre.get("seconds")  # runs from before it was recorded: estimated below
        bs = (config or {}).get("train", {}).get("batch_size") if config else None
        if seconds is None and "images_per_s" in pre and "steps" in pre and bs:
            seconds = pre["steps"] * bs / max(pre["images_per_s"], 1e-9)
        if seconds is not None:
            facts.append(f"≈ {seconds / 60:.1f} min" if seconds >= 90 else f"≈ {seconds:.0f} s")
        if "images_per_s" in pre:
            facts.append(f"{pre['images_per_s']:,.0f} images/s")
        if "final_loss" in pre:
            facts.append(f"final loss {pre['final_loss']:.4f}")
        if pre.get("skipped_samples"):
            facts.append(f"{pre['skipped_samples']:.0f} unreadable samples skipped")
        if pre.get("nonfinite_steps"):
            facts.append(f"{pre['nonfinite_steps']:.0f} non-finite steps skipped")
        rows.append(("pretraining", esc(", ".join(facts))))
    body = '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
    if config:
        body += ("<details><summary>config.yaml</summary><pre>"
                 f"{esc(yaml.safe_dump(config, sort_keys=False))}</pre></details>")
    return Section("summary", "Summary", body)


# ----------------------------------------------------------------------------- results table


def results_table(records: list[dict]) -> str:
    """One table: a group of rows per protocol, rows (task, subset, metric, budget), one column per
    encoder (ssl, scratch, raw, peers) so they sit side by side; the best cell of a row in bold."""
    recs = [r for r in records if r.get("protocol") != "pretrain" and r.get("mean") is not None
            and r.get("baseline") is None]
    if not recs:
        return ""
    protocols = sorted({str(r.get("protocol", "")) for r in recs},
                       key=lambda p: (rank_in(PROTOCOLS, p), p))
    cols = sorted({column(r) for r in recs}, key=lambda c: (rank_in(ENCODERS, c), c))
    show = {"task": len({r.get("task") for r in recs}) > 1, "subset": any(r.get("defect") is not None for r in recs),
            "metric": True}
    head = [h for h in ("task", "subset", "metric") if show[h]] + ["labels"]
    width = len(head) + len(cols)
    groups = []
    for protocol in protocols:
        rows: dict[tuple, dict[str, dict]] = {}
        for r in (r for r in recs if r.get("protocol") == protocol):
            key = (str(r.get("task", "")), str(r.get("defect", "")), str(r.get("metric", "")), budget_order(r),
                   budget(r))
            rows.setdefault(key, {})[column(r)] = r
        lines = [f'<tr class="group"><th colspan="{width}">{esc(PROTOCOLS.get(protocol, protocol))}</th></tr>']
        for key in sorted(rows, key=lambda k: (k[0], k[1] == "overall", k[1], rank_in(METRICS, k[2]), k[2], k[3])):
            task, subset, metric, _, label = key
            cells = rows[key]
            means = [c["mean"] for c in cells.values()]
            best = (min if lower_is_better(metric) else max)(means) if len(means) >= 2 else None
            labels = {"task": task, "subset": subset, "metric": METRICS.get(metric, metric)}
            tds = [f'<td class="l">{esc(labels[h])}</td>' for h in head[:-1]] + [f'<td class="l">{esc(label)}</td>']
            for c in cols:
                r = cells.get(c)
                if r is None:
                    tds.append('<td class="na">–</td>')
                    continue
                std, n = r.get("std") or 0.0, r.get("n_seeds")
                text = f"{r['mean']:.3f}" + (f" ± {std:.3f}" if n is None or n > 1 else "")
                tip = f' title="{esc(n)} seed(s)"' if n else ""
                cls = ' class="best"' if best is not None and r["mean"] == best else ""
                tds.append(f"<td{cls}{tip}>{esc(text)}</td>")
            lines.append("<tr>" + "".join(tds) + "</tr>")
        groups.append("<tbody>" + "".join(lines) + "</tbody>")
    seeds = sorted({int(r["n_seeds"]) for r in recs if r.get("n_seeds")})
    seeds_txt = ""
    if seeds and seeds != [1]:
        seeds_txt = f" over {seeds[-1]} seeds" + (" (a number without ± is a single run)" if seeds[0] == 1 else "")
    header = "".join(f'<th class="l">{esc(h)}</th>' for h in head) + "".join(f"<th>{esc(c)}</th>" for c in cols)
    known = "; ".join(f"<b>{esc(c)}</b> = {esc(ENCODERS[c])}" for c in cols if c in ENCODERS)
    return (f'<div class="scroll"><table><thead><tr>{header}</tr></thead>{"".join(groups)}</table></div>'
            f'<p class="note">Mean ± standard deviation{esc(seeds_txt)}; '
            f"the best encoder in each row is highlighted. {known}.</p>")


# ----------------------------------------------------------------------------- image sections


def _subset(n: int, labels: np.ndarray | None, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` indices out of ``n``, stratified by label when labels exist, sorted."""
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, limit, replace=False))
    return np.sort(pick_queries(labels, limit, seed))


def reconstruction_section(method: nn.Module, images: np.ndarray, labels: np.ndarray | None,
                           save: FigureWriter) -> Section:
    idx = pick_queries(labels, 8, seed=1, total=len(images))
    x = to_float(as_tensor(images[idx])).to(module_device(method))
    with torch.random.fork_rng(devices=[]), eval_mode(method):
        torch.manual_seed(0)
        out = method.reconstruct(x)
    patch = int(getattr(method, "patch_size", getattr(method.encoder, "patch_size", 1)))
    ratio = getattr(getattr(method, "cfg", None), "mask_ratio", None)
    png = fg.plot_reconstructions(x.cpu(), {k: v.float().cpu() for k, v in out.items()})
    hidden = f"{ratio:.0%} of the {patch}×{patch} patches" if ratio is not None else "most patches"
    caption = (f"Each column is one image. Row 2 is what the encoder saw: {hidden} are hidden (blue-grey). "
               "Row 3 is the decoder's prediction for every patch; row 4 pastes the predicted patches "
               "into the visible ones. Blurry but correctly placed strokes in the hidden patches mean "
               "the encoder has learned the shapes' structure; flat grey means it has not (yet).")
    return Section("reconstructions", "MAE reconstructions", save("mae_reconstructions", png, caption,
                                                                 "MAE reconstruction grid"))


def attention_section(encoder: nn.Module, images: np.ndarray, labels: np.ndarray | None,
                      save: FigureWriter) -> Section:
    idx = pick_queries(labels, 4, seed=2, total=len(images))
    heads, roll = vit_attention(encoder, images[idx])
    png = fg.plot_attention(images[idx], heads, roll)
    n_heads = heads.shape[1]
    shown = f"the first 6 of {n_heads}" if n_heads > 6 else f"all {n_heads}"
    caption = ("Where the ViT's summary token looks. <b>Rollout</b> (Abnar &amp; Zuidema 2020) follows "
               "attention through all blocks, counting the residual path, and shows how much each patch "
               "contributes to the final CLS token. <b>Head</b> columns show the last block's CLS attention "
               f"for {shown} heads. Bright = more attention; each map is scaled to its own range, so compare "
               "shapes, not brightness, across maps; on grey images a blue line outlines the image's bright "
               "shapes. Heads that focus on the object rather than the background are a sign of a useful "
               "representation.")
    return Section("attention", "Attention maps", save("attention_maps", png, caption, "attention maps"))


def embedding_sections(encoder: nn.Module, images, labels: np.ndarray | None,
                       class_names: list[str] | None, save: FigureWriter, max_points: int,
                       gallery: bool = True) -> list[Section]:
    """The embedding map, and (``gallery``: images) the nearest-neighbour gallery; ``images`` may be
    any modality's inputs (``data.inputs``)."""
    idx = _subset(rows(images), labels, max_points)
    imgs = take(images, idx)
    labs = labels[idx] if labels is not None else None
    feats = extract_features(encoder, imgs).numpy()
    coords, ratio = pca(feats, 2)
    # Centred features for t-SNE and neighbours: the direction all images share (large in young
    # ViTs, whose features are nearly parallel) would otherwise make every cosine read 1.000.
    feats = feats - feats.mean(axis=0, keepdims=True)
    maps = {f"PCA ({ratio.sum():.0%} of variance)": coords}
    if len(feats) >= 10:
        maps["t-SNE"] = tsne(feats)
    png = fg.plot_embedding(maps, labs, class_names)
    colour = "coloured by class" if labs is not None else "one dot per sample"
    caption = (f"Encoder features of {len(feats)} samples, {colour}. PCA is a linear projection: distances "
               "are meaningful, but only two directions are shown. t-SNE keeps each image's neighbourhood: "
               "tight single-colour clusters mean the classes are separable with few labels; distances "
               "between clusters and cluster sizes carry no meaning.")
    sections = [Section("embedding", "Embedding map", save("embedding_map", png, caption, "embedding map"))]
    if len(feats) >= 3 and gallery:
        k = min(5, len(feats) - 1)
        q = pick_queries(labs, 6, seed=3, total=len(feats))
        nbr, sim = nearest_neighbours(feats, q, k)
        png = fg.plot_neighbours(imgs, q, nbr, sim, labs, class_names)
        agree = ""
        if labs is not None:
            all_nbr, _ = nearest_neighbours(feats, np.arange(len(feats)), k)
            rate = float((labs[all_nbr] == labs[:, None]).mean())
            agree = (f" Over all {len(feats)} images, {rate:.0%} of the {k} nearest neighbours share the "
                     f"query's class (chance ≈ {1 / max(len(np.unique(labs)), 1):.0%}).")
        caption = ("Each row: a query image (left) and the images whose encoder features are most similar "
                   "(cosine similarity of mean-centred features, above each image).")
        if labs is not None:
            caption += f" Green frame = same class as the query, red = different.{agree}"
        sections.append(Section("neighbours", "Nearest neighbours",
                                save("nearest_neighbours", png, caption, "nearest-neighbour gallery")))
    return sections


def anomaly_section(anomaly: dict, save: FigureWriter) -> Section:
    names = anomaly.get("names") or anomaly.get("defect")
    png = fg.plot_anomaly(anomaly["images"], anomaly["heatmaps"], anomaly.get("masks"), anomaly.get("scores"),
                          list(names) if names is not None else None)
    outline = " A white line outlines the ground-truth defect." if anomaly.get("masks") is not None else ""
    caption = ("Top: test images; bottom: the anomaly heatmap over each (red = far from every normal patch "
               "seen in training). All heatmaps share one colour scale, so columns compare directly; the "
               f"image score is the highest patch score.{outline} A good detector is red inside the outline "
               "and blue elsewhere, and quiet on normal images.")
    return Section("anomaly", "Anomaly heatmaps", save("anomaly_heatmaps", png, caption, "anomaly heatmaps"))


# ----------------------------------------------------------------------------- page


CSS = """
:root{--fg:#1d2430;--muted:#5b6675;--line:#e2e6ed;--accent:#1f5fa8;--zebra:#f6f8fb;--best:#e3f3e7}
*{box-sizing:border-box}
body{margin:0;background:#eef1f5;color:var(--fg);
 font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 36px 48px;background:#fff;min-height:100vh}
header h1{margin:0 0 4px;font-size:1.7rem;letter-spacing:-.01em}
header p{margin:0;color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:4px 20px;margin:18px 0 8px;padding:10px 0;
 border-top:1px solid var(--line);border-bottom:1px solid var(--line)}
nav a{color:var(--accent);text-decoration:none;font-size:.93rem;white-space:nowrap}
nav a:hover{text-decoration:underline}
section{margin-top:34px}
h2{font-size:1.3rem;margin:0 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:1.05rem;margin:22px 0 8px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:6px 20px;margin:0}
dl.kv dt{color:var(--muted)}
dl.kv dd{margin:0;overflow-wrap:anywhere}
details{margin-top:12px}
summary{cursor:pointer;color:var(--accent)}
pre{background:var(--zebra);border:1px solid var(--line);border-radius:6px;padding:10px 14px;
 font-size:.85rem;overflow:auto;max-height:420px}
code{font-size:.9em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.93rem;margin:4px 0}
th,td{padding:6px 14px;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #c9d0da;font-weight:600}
th.l,td.l{text-align:left}
tbody tr:nth-child(odd){background:var(--zebra)}
tr.group th{text-align:left;background:#fff;padding:16px 14px 6px;font-size:.98rem;color:var(--accent);
 border-bottom:1px solid var(--line)}
td.best{font-weight:700;background:var(--best)}
td.na{color:#b0b7c2;text-align:center}
p.note{color:var(--muted);font-size:.88rem;margin:6px 0 0;max-width:80ch}
figure{margin:10px 0 0}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.92rem;margin-top:8px;max-width:85ch}
footer{margin-top:44px;color:var(--muted);font-size:.85rem;border-top:1px solid var(--line);padding-top:10px}
"""


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole HTML document for ``sections``: inline CSS, no scripts, no external resources."""
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>{body}"
        f"<footer>Generated by selfsup on {esc(stamp)}. This page is self-contained: every figure is "
        "embedded, and each is also saved as a PNG in the run's <code>figures/</code> folder.</footer>"
        "</main></body></html>\n"
    )


def verdict_list(records: list[dict]) -> str:
    """The verdict sentences (``evaluate.verdict``), grouped by budget, with how they were reached."""
    recs = sorted((r for r in records if r.get("baseline") and r.get("verdict")),
                  key=lambda r: (str(r.get("task")), budget_order(r), rank_in(PROTOCOLS, r.get("protocol", ""))))
    if not recs:
        return ""
    items = "".join(f"<li><b>{esc(budget(r))}</b>: {esc(r['verdict'])}</li>" for r in recs)
    return (f'<ul class="verdict">{items}</ul><p class="note">Each difference is paired over the same label draws '
            "(every encoder gets the same labels), with a 95 % Student-t interval; an interval that holds 0 is no "
            "significant difference. Every encoder had its own hyper-parameters chosen on held-out labels only "
            "(kNN k, the linear probe's regularisation, the fine-tuning learning rate and length).</p>")


def build_report(
    run_dir: str | Path,
    *,
    method: nn.Module | None = None,
    images: np.ndarray | torch.Tensor | None = None,
    labels: np.ndarray | torch.Tensor | None = None,
    class_names: list[str] | None = None,
    anomaly: dict | None = None,
    title: str | None = None,
    encoder: nn.Module | None = None,
    spec=None,
    max_points: int = 1000,
) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/figures/*.png``) and return the HTML's path.

    ``method``: the trained method (its ``encoder`` gives attention and embeddings; a ``reconstruct``
    method gives MAE reconstructions); ``encoder`` (with its ``spec``) may be passed instead. ``images``:
    uint8 or uint16 (N, C, H, W) samples of the data with optional ``labels`` (N,) and ``class_names``;
    at most ``max_points`` of them are embedded. For a table or series method ``images`` are its
    inputs (``data.inputs``) and the sections are ``interpret.structured``'s (reconstructions,
    per-feature errors, anomaly scores over time, forecasts) and the embedding map.
    ``anomaly``: {"images" (M, C, H, W), "heatmaps"
    (M, h, w), optional "masks" (M, H, W), "scores" (M,), "names" (M,)}.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save = FigureWriter(run_dir / "figures")
    cfg_path = run_dir / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else None
    config = config if isinstance(config, dict) else None
    records = load_records(run_dir / "metrics.json")
    if encoder is None and method is not None:
        encoder = getattr(method, "encoder", None)
        if encoder is None and hasattr(method, "num_features"):  # a bare encoder passed as the method
            encoder = method
    spec = spec if spec is not None else getattr(method, "spec", None)
    structured = spec is not None and spec.modality in ("table", "series")
    if images is not None and not structured:
        images = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if images.dtype not in (np.uint8, np.uint16):  # [0, 1] floats; 16-bit images stay 16-bit
            images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    if labels is not None:
        labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        labels = labels if (labels >= 0).any() else None

    sections = [summary_section(config, records, encoder, run_dir)]
    table = results_table(records)
    if table:
        sections.append(Section("results", "Results", table))
    verdict = verdict_list(records)
    if verdict:
        sections.append(Section("verdict", "Verdict", verdict))
    curve = fg.plot_label_efficiency(records)
    if curve is not None:
        caption = ("Accuracy as the number of labels grows (log scale), mean ± std over seeds. Colour = "
                   "protocol, line style = encoder (solid: pretrained, dashed: from scratch, dotted: raw "
                   "pixels). Pretraining pays off where the solid lines sit above the others, usually most "
                   "at the smallest budgets.")
        sections.append(Section("label-efficiency", "Label efficiency",
                                save("label_efficiency", curve, caption, "label-efficiency curve")))
    hist = fg.read_loss_history(run_dir)
    if hist is not None:
        caption = ("Self-supervised training loss per logged optimizer step (thin line) and, with enough "
                   "points, its moving average (bold). It should fall quickly and then flatten; a curve still "
                   "falling at the end means a longer budget would help, spikes or a rise mean the learning rate "
                   "is too high.")
        sections.append(Section("loss", "Loss curve", save("loss_curve", fg.plot_loss_curve(*hist), caption,
                                                            "loss curve")))
    if structured:
        sections += [Section(*parts) for parts in structured_sections(run_dir, method, images, spec, save)]
        if encoder is not None and images is not None and rows(images):
            sections += embedding_sections(encoder, images, labels, class_names, save, max_points, gallery=False)
    elif images is not None and len(images):
        if method is not None and hasattr(method, "reconstruct"):
            sections.append(reconstruction_section(method, images, labels, save))
        if encoder is not None and is_vit(encoder):
            sections.append(attention_section(encoder, images, labels, save))
        if encoder is not None:
            sections += embedding_sections(encoder, images, labels, class_names, save, max_points)
    if anomaly is not None and anomaly.get("images") is not None and anomaly.get("heatmaps") is not None:
        sections.append(anomaly_section(anomaly, save))

    name = (config or {}).get("method", {}) if config else {}
    name = name.get("name") if isinstance(name, dict) else name
    title = title or f"selfsup report · {run_dir.name}"
    subtitle = f"{name.upper()} pretraining run" if isinstance(name, str) else "selfsup run"
    tasks = sorted({str(r["task"]) for r in records if r.get("task")})
    if tasks:
        subtitle += f" · evaluated on {', '.join(tasks)}"
    out = run_dir / "report.html"
    write_text(out, render_page(title, subtitle, sections))  # atomic: a reader never sees half a page
    return out


__all__ = ["build_report", "results_table", "render_page", "Section"]
