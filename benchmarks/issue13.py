"""Issue 13's benchmark table: tables and time series, SSL beside the baselines users trust.

    python benchmarks/issue13.py                    # the full table (hours; 2 CPU cores)
    python benchmarks/issue13.py --smoke            # the same code path on small budgets (about 2 minutes)
    python benchmarks/issue13.py --only ucr,ett     # some of: ucr, fraud, adbench, ett

Everything goes through ``selfsup.api`` exactly as the commands in the README, with default
settings except the budget: every pretraining is bounded by ``train.clock=cpu`` (CPU time of this
process, so a busy machine gives the same compute), at most 10 minutes per data set and less
where the set is small. Results go into each run's ``metrics.json`` and one summary,
``OUT/issue13.md`` (+ ``issue13.json``), whose last column names the winner of each row, so where
a baseline wins the table says so.

- UCR/UEA (5 sets): ``mae`` on the TRAIN file, few-label evaluation on TEST at 5 shots per class
  and at 100 % of the labels: kNN / linear probe / fine-tuning vs MiniRocket + ridge, the raw-window
  kNN / linear probe and the same network from scratch, 5 label draws (3 for fine-tuning).
- Credit-card fraud (ULB sample, 9 % fraud): ``mae`` on the stratified 70 % (``--split train``),
  labels drawn from it at 1 % and 10 %, tested on the 30 % the encoder never saw; AUPRC, vs
  gradient-boosted trees.
- ADBench (24 sets): ``mae`` on ADBench's 70 % without labels, scored on the 30 %; AUROC / AUPRC of
  the SSL embedding kNN and reconstruction error vs IsolationForest and the raw kNN distance. As in
  ADBench's own code, a set of more than 10,000 rows is first subsampled to 10,000 (seeded; stratified here).
- ETTh1: ``mae`` (PatchTST's masked-patch recipe) on the 12 training months, windows of 336; MSE /
  MAE at horizons 96 and 336 (lookback 336) of a linear head on the frozen encoder vs the
  DLinear-style linear model, and fine-tuned vs from scratch. PatchTST reports MSE ~0.37 at
  horizon 96 (self-supervised, fine-tuned on a GPU; Nie et al. 2023): the reference row.

SELFSUP_SHARED_DATA points at the data (default ../shared/data beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import _passive_omp  # noqa: F401  (before torch)
import torch

import selfsup.api as ss
from selfsup.adapt.finetune import FinetuneRecipe

DATA = Path(os.environ.get("SELFSUP_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
UCR = {"ECG200": "tsv", "GunPoint": "ts", "PhalangesOutlinesCorrect": "tsv", "RefrigerationDevices": "tsv",
       "UWaveGestureLibrary": "ts"}
UCR_BUDGET = {"ECG200": "3m", "GunPoint": "3m", "PhalangesOutlinesCorrect": "6m", "RefrigerationDevices": "6m",
              "UWaveGestureLibrary": "5m"}
ADBENCH_MAX_ROWS = 10_000  # ADBench (Han et al. 2022) subsamples larger sets to 10,000 rows
ETT_REFERENCE = {96: 0.370}  # PatchTST self-supervised, ETTh1 (Nie et al. 2023)
QUICK = FinetuneRecipe(batch_size=32, lr_grid=(1.0,), patience=2, min_steps=10, max_steps=30)


def adbench_rows(path: Path, out: Path) -> Path:
    """ADBench's own rule for large sets (``data_generator``: "if the dataset is too large, subsampling
    for considering the computational cost"): over ``ADBENCH_MAX_ROWS`` rows, a seeded, stratified
    ``ADBENCH_MAX_ROWS`` of them (written once under ``out``) before the 70/30 split; else ``path``."""
    import numpy as np

    with np.load(path) as z:
        if len(z["y"]) <= ADBENCH_MAX_ROWS:
            return path
        x, y = z["X"], z["y"]
    sub = out / "adbench-data" / path.name
    if not sub.is_file():
        sub.parent.mkdir(parents=True, exist_ok=True)
        from sklearn.model_selection import train_test_split

        # stratified, so the rarest sets keep their anomaly rate (34_smtp: 30 in 95,156; a plain draw kept 1)
        idx = np.sort(train_test_split(np.arange(len(y)), train_size=ADBENCH_MAX_ROWS, stratify=y, random_state=0)[0])
        np.savez(sub, X=x[idx], y=y[idx])
    return sub


def adbench_budget(path: Path, cap: int = 10) -> str:
    """CPU-time budget for an ADBench set: 1 minute per 2,000 training rows, between 1 and ``cap``."""
    import numpy as np

    with np.load(path) as z:
        rows = 0.7 * len(z["y"])
    return f"{min(cap, max(1, round(rows / 2000)))}m"


class Bench:
    def __init__(self, out: Path, smoke: bool, log: Callable[[str], None], adbench_cap: int = 10,
                 collect: bool = False, adbench_sets: list[str] | None = None) -> None:
        self.out, self.smoke, self.log, self.adbench_cap, self.collect = out, smoke, log, adbench_cap, collect
        self.adbench_sets = adbench_sets
        self.rows: list[dict] = []

    def pretrain(self, data: str, name: str, budget: str, **options) -> Path | None:
        run = self.out / name
        if (run / "encoder.safetensors").is_file():
            self.log(f"{run}: pretrained already, reusing it")
            return run
        if self.collect:
            return None
        over = ["train.clock=cpu", "data.num_workers=0"]
        if self.smoke:
            over += ["encoder.size=custom", "encoder.width=32", "encoder.depth=1", "encoder.heads=4",
                     "method.decoder_width=32", "method.decoder_depth=1", "method.decoder_heads=4"]
        return ss.pretrain(data, "mae", budget="10s" if self.smoke else budget, out=run, overrides=over,
                           data_options=options, progress=False, log=self.log)

    def evaluated(self, run: Path | None, protocol: str) -> list[dict] | None:
        """The records a run already holds (an interrupted benchmark is not evaluated twice): those of
        every protocol but pretraining once one of ``protocol`` is there, else None."""
        path = run / "metrics.json" if run is not None else None
        recs = json.loads(path.read_text()) if path is not None and path.is_file() else []
        if any(r.get("protocol") == protocol for r in recs):
            self.log(f"{run}: evaluated already, reusing its records")
            return [r for r in recs if r.get("protocol") != "pretrain"]
        return [] if self.collect else None

    def add(self, group: str, task: str, setting: str, cells: dict[str, float], lower: bool = False,
            reference: float | None = None) -> None:
        cells = {k: v for k, v in cells.items() if v is not None}
        best = (min if lower else max)(cells, key=cells.get) if cells else "-"
        self.rows.append({"group": group, "task": task, "setting": setting, "cells": cells, "winner": best,
                          **({"reference": reference} if reference is not None else {})})

    def ucr(self) -> None:
        for name, ext in list(UCR.items())[: 1 if self.smoke else None]:
            train, test = (str(DATA / "timeseries/ucr" / name / f"{name}_{s}.{ext}") for s in ("TRAIN", "TEST"))
            run = self.pretrain(train, f"ucr-{name}", UCR_BUDGET[name])
            recs = self.evaluated(run, "finetune")
            if recs is None:
                recs = ss.evaluate(run, test, train_data=train, shots=[5], label_fractions=[1.0],
                                   seeds=2 if self.smoke else 5, finetune_seeds=1 if self.smoke else 3,
                                   recipe=QUICK if self.smoke else None, log=self.log)
            if not recs:
                continue
            for setting in ("5-shot", "100%"):
                self.add("UCR/UEA (top-1 accuracy)", name, setting, pick(recs, setting, "top1", [
                    ("knn", "ssl"), ("linear", "ssl"), ("finetune", "ssl"), ("supervised", "minirocket"),
                    ("finetune", "scratch"), ("knn", "raw")]))

    def fraud(self) -> None:
        data = str(DATA / "creditcard" / "creditcard_sample.csv")
        run = self.pretrain(data, "fraud", "5m", target="Class", split="train", drop=["Time"])
        recs = self.evaluated(run, "finetune")
        if recs is None:
            recs = ss.evaluate(run, data, label_fractions=[0.01, 0.1], seeds=2 if self.smoke else 5,
                               finetune_seeds=1 if self.smoke else 3, recipe=QUICK if self.smoke else None,
                               log=self.log)
        if not recs:
            return
        for setting in ("1%", "10%"):
            self.add("Credit-card fraud (AUPRC)", "creditcard", setting, pick(recs, setting, "auprc", [
                ("knn", "ssl"), ("linear", "ssl"), ("finetune", "ssl"), ("supervised", "gbdt"), ("linear", "raw"),
                ("finetune", "scratch")]))

    def adbench(self) -> None:
        sets = sorted((DATA / "tabular" / "adbench").glob("*.npz"))
        if self.adbench_sets:  # a second process can take some sets, in its own order
            sets = [DATA / "tabular" / "adbench" / f"{name}.npz" for name in self.adbench_sets]
        for full in [p for p in sets if p.stem in ("15_Hepatitis", "46_WPBC")] if self.smoke else sets:
            path = adbench_rows(full, self.out)
            run = self.pretrain(str(path), f"adbench-{full.stem}", adbench_budget(path, self.adbench_cap),
                                split="train")
            recs = self.evaluated(run, "anomaly")
            if recs is None:
                bank = ss.anomaly_fit(run, str(path), log=self.log)
                recs = ss.anomaly_score(bank, str(path), report=False, log=self.log)
            if not recs:
                continue
            by = {(r["encoder"], r["detector"], r["metric"]): r["mean"] for r in recs if "detector" in r}
            setting = "70/30" if path == full else f"70/30 of {ADBENCH_MAX_ROWS:,}"
            for metric in ("auroc", "auprc"):
                self.add(f"ADBench unsupervised ({metric.upper()})", full.stem, setting,
                         {f"{e} {d}": by.get((e, d, metric)) for e, d in (("ssl", "knn"), ("ssl", "reconstruction"),
                                                                           ("ssl", "ensemble"), ("raw", "iforest"),
                                                                           ("raw", "knn"))})

    def ett(self) -> None:
        data = str(DATA / "timeseries" / "forecasting" / "ETTh1.csv")
        window = 96 if self.smoke else 336
        run = self.pretrain(data, "ett-ETTh1", "10m", window=window, stride=window // 8)
        horizons = [96] if self.smoke else [96, 336]
        recs = self.evaluated(run, "forecast-linear")
        if recs is None:
            recs = ss.forecast(run, data, horizons=horizons, lookback=window, steps=5 if self.smoke else 5000,
                               log=self.log)
        if not recs:
            return
        for h in horizons:
            cells = {f"{p.split('-')[1]} {e}": next((r["mean"] for r in recs if r["protocol"] == p and r["encoder"] == e
                                                     and r["horizon"] == h and r["metric"] == "mse"), None)
                     for p, e in (("forecast-linear", "ssl"), ("forecast-linear", "dlinear"),
                                  ("forecast-finetune", "ssl"), ("forecast-finetune", "scratch"))}
            self.add("ETTh1 forecasting (MSE, lower is better)", "ETTh1", f"H={h}, L={window}", cells, lower=True,
                     reference=ETT_REFERENCE.get(h))

    def write(self) -> Path:
        lines = ["# Issue 13 benchmark" + (" (smoke run: tiny budgets, not a result)" if self.smoke else ""), ""]
        for group in dict.fromkeys(r["group"] for r in self.rows):
            rows = [r for r in self.rows if r["group"] == group]
            cols = list(dict.fromkeys(c for r in rows for c in r["cells"]))
            ref = any("reference" in r for r in rows)
            head = "| task | setting | " + " | ".join(cols) + (" | PatchTST (paper)" if ref else "") + " | winner |"
            lines += [f"## {group}", "", head, "|" + " --- |" * (len(cols) + 3 + ref)]
            for r in rows:
                vals = [f"{r['cells'][c]:.3f}" if c in r["cells"] else "–" for c in cols]
                extra = [f"{r['reference']:.3f}" if "reference" in r else "–"] if ref else []
                lines.append(f"| {r['task']} | {r['setting']} | " + " | ".join(vals + extra) + f" | {r['winner']} |")
            lines.append("")
        (self.out / "issue13.json").write_text(json.dumps(self.rows, indent=1))
        path = self.out / "issue13.md"
        path.write_text("\n".join(lines))
        return path


def pick(recs: list[dict], setting: str, metric: str, cells: list[tuple[str, str]]) -> dict[str, float | None]:
    """The mean of each (protocol, encoder) at a budget ("5-shot", "10%") and metric."""
    from selfsup.evaluate.records import budget

    found = {(r["protocol"], r["encoder"]): r["mean"] for r in recs
             if budget(r) == setting and r["metric"] == metric and not r.get("baseline")}
    return {f"{p} {e}": found.get((p, e)) for p, e in cells}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/issue13")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets and subsets: checks the path, not a result")
    ap.add_argument("--only", default="ucr,fraud,adbench,ett")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models on a "
                    "shared 2-core machine)")
    ap.add_argument("--adbench-minutes", type=int, default=10,
                    help="cap on each ADBench set's pretraining budget (24 sets: 10 is hours, 1 is about 40 minutes)")
    ap.add_argument("--adbench-sets", default="", help="comma-separated ADBench set names (default: all 24), in "
                    "this order: a second process can run some of them")
    ap.add_argument("--collect", action="store_true",
                    help="only gather the tables from the run folders already in --out; run nothing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / "issue13.log", "a")  # noqa: SIM115 - open for the whole run

    def log(msg: str) -> None:
        print(msg, flush=True)
        logfile.write(msg + "\n")
        logfile.flush()

    bench = Bench(out, args.smoke, log, args.adbench_minutes, args.collect,
                  [n for n in args.adbench_sets.split(",") if n])
    t0 = time.monotonic()
    for part in args.only.split(","):
        getattr(bench, part.strip())()
        bench.write()
    log(f"issue 13 benchmark done in {(time.monotonic() - t0) / 60:.1f} min: {out / 'issue13.md'}")
    log((out / "issue13.md").read_text())


if __name__ == "__main__":
    main()
