"""Issue 20 benchmark: the shipped series generalist and the unlabelled pool, on the 5 shared UCR/UEA sets.

For each set, ``selfsup:series-small`` (pretrained on synthetic series only, so none of these sets
was in its corpus) is evaluated frozen at 5 shots per class (5 draws) under kNN, the linear probe,
``semi`` (label propagation over the unlabelled TRAIN series) and ``hybrid`` (its features plus the
raw series under the linear probe), against MiniRocket + ridge (supervised), the raw series and
MiniRocket's own features under the same kNN / semi, all tuned on the draw's labels only; TEST is
only scored. The table is printed as markdown (for BENCHMARKS.md), one row per set, and every
verdict against MiniRocket.

    nice -n 10 python benchmarks/issue20.py --out runs/issue20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _passive_omp  # noqa: F401, E402  (before torch)

import selfsup.api as ss  # noqa: E402

DATA = Path(os.environ.get("SELFSUP_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
UCR = {"ECG200": "tsv", "GunPoint": "ts", "PhalangesOutlinesCorrect": "tsv", "RefrigerationDevices": "tsv",
       "UWaveGestureLibrary": "ts"}
MODEL = "selfsup:series-small"
COLUMNS = [("knn", "foundation"), ("linear", "foundation"), ("semi", "foundation"), ("hybrid", "foundation"),
           ("supervised", "minirocket"), ("semi", "minirocket-features"), ("knn", "raw"), ("semi", "raw")]


def cell(recs: list[dict], protocol: str, encoder: str) -> float | None:
    for r in recs:
        if (r["protocol"], r["encoder"], r["metric"]) == (protocol, encoder, "top1") and not r.get("baseline"):
            return r["mean"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/issue20")
    ap.add_argument("--sets", default=",".join(UCR))
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| task | " + " | ".join(f"{p} {e}" for p, e in COLUMNS) + " | winner |",
             "| --- |" + " --- |" * (len(COLUMNS) + 1)]
    verdict_lines = []
    for name in a.sets.split(","):
        ext = UCR[name]
        train, test = (str(DATA / "timeseries/ucr" / name / f"{name}_{s}.{ext}") for s in ("TRAIN", "TEST"))
        path = out / name / "records.json"
        if path.is_file():
            recs = json.loads(path.read_text())
        else:
            t0 = time.process_time()
            recs = ss.evaluate(MODEL, test, train_data=train, protocols=["knn", "linear", "semi", "hybrid"],
                               baselines=["raw", "minirocket"], shots=[5], seeds=a.seeds, out=out / name)
            (out / name).mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(recs, indent=1))
            print(f"{name}: {time.process_time() - t0:.0f} CPU-s", flush=True)
        cells = {f"{p} {e}": cell(recs, p, e) for p, e in COLUMNS}
        best = max((k for k, v in cells.items() if v is not None), key=lambda k: cells[k])
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells.values())
                     + f" | {best} |")
        for r in recs:
            if r.get("baseline") in ("minirocket", "minirocket-features", "raw") and r["metric"] == "top1_difference":
                verdict_lines.append(f"{name}: {r['verdict']}")
    print("\n".join(lines))
    print("\n".join(verdict_lines))
    (out / "table.md").write_text("\n".join(lines) + "\n\n" + "\n".join(verdict_lines) + "\n")


if __name__ == "__main__":
    main()
