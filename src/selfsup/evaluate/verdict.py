"""The verdict: is the pretrained encoder better than each baseline, by how much, how sure?

For one label budget the same label draws (seeds) are given to every encoder, so the scores come
in pairs; the difference per draw removes the luck of the draw that both share. The verdict is
the mean paired difference with a 95 % Student-t interval (n - 1 degrees of freedom, n draws),
and one plain sentence: "SSL fine-tune beats scratch by +0.12 (95 % CI +0.08 to +0.16)", "scratch
beats SSL fine-tune by ...", or "no significant difference" when the interval holds 0. With one
draw there is no interval and the sentence says so. With all the labels every draw is the same
set, so the interval covers only training randomness (the sentence says "runs on all the
labels"), and identical scores in every draw (kNN, a linear probe) give no interval at all.

Baselines are the other encoders of the same protocol (raw under the frozen probes, scratch
under fine-tuning, foundation under all) and, under every protocol, the whole supervised models
(protocol "supervised": gradient-boosted trees on a table, MiniRocket on series). Each SSL protocol
is compared with each of them rather than the best SSL protocol with the best baseline: picking
either "best" by test score would favour it on the test set itself. They get the same label draws,
so those pairs are paired too.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from selfsup.evaluate.records import BUDGET_KEYS, ENCODERS, PROTOCOLS, budget, lower_is_better, record

CONFIDENCE = 0.95


def paired_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean of a - b, low, high): the Student-t interval of the paired differences.

    ``a`` and ``b`` hold one score per draw, in the same order. With a single pair the interval is
    (nan, nan); with differences all equal it has zero width.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("no paired scores")
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def sentence(protocol: str, encoder: str, baseline: str, metric: str, diff: float, low: float, high: float,
             n: int, all_labels: bool = False) -> str:
    """The plain-language verdict for one comparison (``diff`` = encoder - baseline).

    ``all_labels``: every draw holds the whole labelled pool, so the draws differ only in training
    randomness: the interval says so, and identical draws (deterministic models) give no verdict."""
    name = f"{encoder.upper() if encoder == 'ssl' else encoder} {PROTOCOLS.get(protocol, protocol).split(' (')[0]}"
    if math.isnan(low):
        return f"{name} vs {baseline}: {diff:+.3f} {metric} from {n} draw; no interval (give more seeds)"
    if all_labels and low == high:
        return (f"{name} vs {baseline}: {diff:+.3f} {metric} with all the labels, the same in all {n} draws; "
                "no interval (the draws differ only in training randomness)")
    runs = f"{n} runs on all the labels" if all_labels else f"{n} draws"

    def ci(lo: float, hi: float) -> str:
        return f"(95 % CI {lo:+.3f} to {hi:+.3f}, {runs})"

    if low <= 0 <= high:
        return f"{name} vs {baseline}: no significant difference in {metric} ({diff:+.3f}, {ci(low, high)[1:]}"
    if (diff > 0) != lower_is_better(metric):
        return f"{name} beats {baseline} by {diff:+.3f} {metric} {ci(low, high)}"
    return f"{baseline} beats {name} by {-diff:+.3f} {metric} {ci(-high, -low)}"  # the interval of what is stated


def _key(rec: dict) -> tuple:
    return (rec.get("task"), rec.get("protocol"), *(rec.get(k) for k in BUDGET_KEYS), rec.get("metric"))


SUPERVISED = "supervised"  # records of whole supervised models, compared with every protocol


def verdicts(records: list[dict], encoder: str = "ssl", metrics: tuple[str, ...] = ("top1", "auprc")) -> list[dict]:
    """One verdict record per (task, protocol, budget, metric, baseline) that ``records`` hold for both
    ``encoder`` and the baseline, from their per-draw ``values`` (paired by seed order).

    A verdict record has protocol, budget and metric of the compared records, ``encoder`` the
    method, ``baseline`` the other encoder, ``metric`` "<metric>_difference", mean/low/high of the
    difference, the per-draw differences in ``values`` and the ``verdict`` sentence. Baselines
    are the other encoders of the same protocol: raw and foundation under the frozen protocols,
    scratch and foundation under fine-tuning; and the "supervised" models under every protocol.
    ``metrics``: top-1 accuracy, and the AUPRC of imbalanced binary tasks where it was measured.
    """
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r.get("metric") in metrics and "values" in r and r.get("baseline") is None:
            by_key.setdefault(_key(r), {})[r["encoder"]] = r
    supervised: dict[tuple, dict[str, dict]] = {}
    for key, encs in by_key.items():
        if key[1] == SUPERVISED:
            supervised[(key[0], *key[2:])] = encs
    out = []
    for key, encs in by_key.items():
        mine = encs.get(encoder)
        if mine is None or key[1] == SUPERVISED:
            continue
        others = {**supervised.get((key[0], *key[2:]), {}), **{e: r for e, r in encs.items() if e != encoder}}
        for base in sorted(others, key=lambda e: list(ENCODERS).index(e) if e in ENCODERS else 99):
            other = others[base]
            n = min(len(mine["values"]), len(other["values"]))
            diff, low, high = paired_interval(mine["values"][:n], other["values"][:n])
            b = {k: mine[k] for k in BUDGET_KEYS if mine.get(k) is not None}
            metric = mine["metric"]
            rec = record(mine["task"], mine["protocol"], encoder, f"{metric}_difference",
                         [x - y for x, y in zip(mine["values"][:n], other["values"][:n], strict=True)], **b)
            rec.update(baseline=base, mean=diff, ci_low=low, ci_high=high, confidence=CONFIDENCE,
                       verdict=sentence(mine["protocol"], encoder, base, metric, diff, low, high, n,
                                        all_labels=mine.get("label_fraction") == 1))
            out.append(rec)
    return out


def format_verdicts(verdict_records: list[dict]) -> str:
    """The verdict sentences, one per line, grouped by budget."""
    return "\n".join(f"{budget(r):>8}  {r['verdict']}" for r in verdict_records)


__all__ = ["CONFIDENCE", "format_verdicts", "paired_interval", "sentence", "verdicts"]
