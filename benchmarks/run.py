"""The CPU benchmark suite in one command (``make bench``): one table, and the records with ``--json``.

    .venv/bin/python benchmarks/run.py [--steps 10] [--compile] [--json]
    .venv/bin/python benchmarks/run.py --threads 1 --clock cpu   # on a machine others are using

Runs, each in its own process: MAE training vs Hugging Face ViTMAE (and timm), embedding
throughput vs Hugging Face ViT and our ONNX export, the before/after log of each optimisation
(with torch.compile under ``--compile``), and the engine's per-step overhead. About 10 minutes
on an idle 2-core machine; each script's own table goes to stderr as it finishes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _passive_omp  # noqa: F401  (before torch)
from common import machine, table

HERE = Path(__file__).parent


def run_script(name: str, args: list[str]) -> list[dict]:
    """Run ``name args --json``; echo its table to stderr and return its records (its last stdout line)."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE / name), *args, "--json"], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    print(f"\n## {name} {' '.join(args)}  ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    if out.returncode != 0 or not lines:
        print(out.stderr[-3000:], file=sys.stderr)
        return [{"task": name, "metric": "error", "note": f"exit code {out.returncode}"}]
    print("\n".join(lines[:-1]), file=sys.stderr)
    return json.loads(lines[-1])


def summary(records: list[dict]) -> list[dict]:
    """One row per (task, contender): images/s with MFU, peak memory and the ratio vs each peer."""
    rows: dict[tuple, dict] = {}
    for r in records:
        task = r.get("task", "")
        if r.get("metric") == "ratio_vs_peer":
            key = (task, r.get("library", "selfsup"))
            rows.setdefault(key, {"task": task, "contender": key[1]})
            note = rows[key].get("ratio", "")
            rows[key]["ratio"] = (note + "; " if note else "") + f"{r['mean']:.2f}x vs {r['peer']}"
            continue
        name = r.get("peer", "") if task != "mae_train_ablation" else r.get("variant", "")
        row = rows.setdefault((task, name), {"task": task, "contender": name})
        metric, value = r.get("metric"), r.get("mean")
        if metric == "images_per_s":
            row["images_per_s"] = r.get("note", "") if value is None else round(value, 1)  # None: not importable
            if "vs_before" in r:
                row["ratio"] = f"{r['vs_before']}x vs before"
        elif metric == "mfu":
            row["mfu"] = round(value, 3)
        elif metric == "peak_mem_mb":
            row["peak_mem_mb"] = round(value)
        elif metric == "error":
            row["images_per_s"] = r.get("note")
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="add the torch.compile variant (1-4 min to compile)")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size (smoke tests); default 256")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: time in CPU seconds, robust when others share the machine (use with --threads 1)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    steps = ["--steps", str(a.steps), "--clock", a.clock, *(["--batch", str(a.batch)] if a.batch else []),
             *(["--threads", str(a.threads)] if a.threads else [])]
    records = run_script("bench_mae.py", ["--device", "cpu", "--config", "tiny32", *steps])
    records += run_script("bench_inference.py", ["--device", "cpu", "--config", "tiny32", *steps])
    records += run_script("ablate_mae.py", [*steps, *(["--compile"] if a.compile else [])])
    steps[1] = str(max(4, a.steps // 2))
    records += run_script("bench_engine.py", steps)
    minutes = (time.perf_counter() - t0) / 60
    print(f"\n# selfsup CPU benchmark suite, {machine()}, {a.threads or 'all'} threads, {a.clock} clock, "
          f"{minutes:.1f} min (medians of interleaved steps; ratio > 1: selfsup faster)")
    print(table(summary(records), ["task", "contender", "images_per_s", "ratio", "mfu", "peak_mem_mb"]))
    if a.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
