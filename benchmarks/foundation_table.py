"""One table from the runs of ``benchmarks/foundation.sh``: frozen foundation, continued, distilled,
scratch and raw side by side, each cell the mean ± std over the same label draws.

    python benchmarks/foundation_table.py continued=runs/foundation/continued-pneumonia \\
        distilled=runs/foundation/distilled-pneumonia [--metric top1] [--markdown]

Each run's ``metrics.json`` holds its own encoder ("ssl", shown under the run's label), its
from-scratch baseline (the same network from random weights: "scratch (<label>)"), and the
"foundation" and "raw" baselines, which are the same in every run (same model, same draws) and
shown once. The verdicts are printed below (the run vs each baseline, paired over draws).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.evaluate.records import PROTOCOLS, budget, budget_order, load_records, rank_in


def columns(runs: list[tuple[str, Path]], metric: str) -> tuple[dict[tuple, dict[str, dict]], list[str]]:
    """{(task, protocol, budget) -> {column -> record}} and the column order."""
    table: dict[tuple, dict[str, dict]] = {}
    order = ["foundation"]
    for label, run in runs:
        order += [label, f"scratch ({label})"]
        for r in load_records(run / "metrics.json"):
            if r.get("metric") != metric or r.get("baseline") or r.get("protocol") in ("pretrain", "monitor"):
                continue
            col = {"ssl": label, "scratch": f"scratch ({label})"}.get(r["encoder"], r["encoder"])
            row = table.setdefault((r["task"], r["protocol"], budget(r), budget_order(r)), {})
            row.setdefault(col, r)
    order.append("raw")
    return table, [c for c in order if any(c in row for row in table.values())]


def render(table: dict, cols: list[str], markdown: bool) -> str:
    rows = [["task", "protocol", "labels", *cols]]
    for key in sorted(table, key=lambda k: (k[0], rank_in(PROTOCOLS, k[1]), k[3])):
        cells = table[key]
        rows.append([key[0], key[1], key[2], *(f"{cells[c]['mean']:.3f} ± {cells[c]['std']:.3f}" if c in cells
                                               else "" for c in cols)])
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER")
    ap.add_argument("--metric", default="top1")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    runs = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in args.runs]
    table, cols = columns(runs, args.metric)
    print(render(table, cols, args.markdown))
    for label, run in runs:
        verdicts = [r for r in load_records(run / "metrics.json") if r.get("baseline") and r.get("verdict")]
        if verdicts:
            print(f"\n{label} ({run}):")
            print("\n".join(f"  {budget(r):>8}  {r['verdict']}" for r in verdicts))


if __name__ == "__main__":
    main()
