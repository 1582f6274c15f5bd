"""Train ``selfsup:series-small``, the shipped series generalist, from synthetic series only.

Reproducible from this file: the corpus is ``data.synthetic.kernel_synth(CORPUS_SIZE, LENGTH,
seed=CORPUS_SEED)`` (KernelSynth-style Gaussian-process kernel compositions; no UCR/UEA, ADBench or
shared data set is read), the encoder PatchTST (univariate; channels are encoded independently at
use, ``encoders.generalist``), trained with ``train.clock=cpu`` budgets so a busy machine does not
change the result. The objective is chosen on validation data that is synthetic too
(``data.synthetic.synthetic_classes``, seed VALIDATION_SEED: 8 kernel-recipe classes): every
candidate gets CANDIDATE_BUDGET of CPU time, the best mean 5-shot kNN accuracy over 5 draws wins
and is trained afresh for FINAL_BUDGET (``--final-budget 0``: the winning candidate is shipped as
it is). The winner's encoder is copied to
``src/selfsup/weights/series-small.safetensors``; a JSON report beside the run folder says what was
chosen and how long each step took.

    nice -n 10 python scripts/train_generalist_series.py --out runs/generalist-series
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

CORPUS_SIZE, LENGTH, CORPUS_SEED, VALIDATION_SEED, TRAIN_SEED = 10_000, 256, 0, 1, 0
CANDIDATES = {
    "mae": ["method.mask_ratio=0.4"],
    "ts2vec": [],
}
ENCODER = ["encoder.series_patch=16", "encoder.size=tiny"]
CANDIDATE_BUDGET, FINAL_BUDGET = "1m", "0"  # the shipped weights: the winning candidate as it is
WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "selfsup" / "weights" / "series-small.safetensors"


def validation_score(run: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Mean 5-shot kNN top-1 over 5 draws on the synthetic validation task (pool and test halves)."""
    from selfsup import runs
    from selfsup.data.splits import sample_few
    from selfsup.evaluate.knn import knn_probe

    enc, _, _ = runs.load_encoder(run)
    with torch.no_grad():
        f = torch.cat([enc(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)])
    half = len(y) // 2
    accs = []
    for seed in range(5):
        idx = sample_few(y[:half], seed=seed, shots=5)
        probs, _ = knn_probe(f[:half][idx], y[:half][idx], f[half:], int(y.max()) + 1)
        accs.append(float((probs.argmax(1).numpy() == y[half:]).mean()))
    return float(np.mean(accs))


def main() -> None:
    import selfsup.api as ss
    from selfsup.data.synthetic import kernel_synth, synthetic_classes

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/generalist-series")
    ap.add_argument("--candidate-budget", default=CANDIDATE_BUDGET)
    ap.add_argument("--final-budget", default=FINAL_BUDGET, help="0: ship the winning candidate without more training")
    ap.add_argument("--no-ship", action="store_true", help="do not copy the weights into the package")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"corpus": {"generator": "selfsup.data.synthetic.kernel_synth", "n": CORPUS_SIZE,
                               "length": LENGTH, "seed": CORPUS_SEED}, "started": time.strftime("%F %T")}
    t0 = time.process_time()
    corpus = out / "corpus.npz"
    if not corpus.exists():
        np.savez(corpus, series=kernel_synth(CORPUS_SIZE, LENGTH, seed=CORPUS_SEED))
    report["corpus_cpu_s"] = time.process_time() - t0
    xv, yv = synthetic_classes(100, LENGTH, seed=VALIDATION_SEED)
    common = [*ENCODER, "train.clock=cpu", f"train.seed={TRAIN_SEED}", "data.num_workers=0"]
    scores = {}
    for name, opts in CANDIDATES.items():
        run = out / f"candidate-{name}"
        if not (run / "encoder.safetensors").exists():
            ss.pretrain(str(corpus), name, out=run, budget=a.candidate_budget, overrides=[*common, *opts],
                        progress=False)
        scores[name] = validation_score(run, xv, yv)
        print(f"candidate {name}: validation 5-shot kNN {scores[name]:.4f}", flush=True)
    best = max(scores, key=scores.get)
    report.update(candidates=scores, chosen=best, candidate_budget=a.candidate_budget)
    final = out / "final" if a.final_budget != "0" else out / f"candidate-{best}"  # 0: ship the winner as it is
    t1 = time.process_time()
    if not (final / "encoder.safetensors").exists():
        ss.pretrain(str(corpus), best, out=final, budget=a.final_budget, overrides=[*common, *CANDIDATES[best]],
                    progress=False)
    report.update(final_budget=a.final_budget, final_validation=validation_score(final, xv, yv),
                  final_cpu_s=time.process_time() - t1, total_cpu_s=time.process_time() - t0,
                  finished=time.strftime("%F %T"))
    metrics = final / "metrics.json"
    recs = json.loads(metrics.read_text()) if metrics.is_file() else []
    report["shipped_run"] = {r["metric"]: r["mean"] for r in recs if r.get("protocol") == "pretrain"}
    if not a.no_ship:
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(final / "encoder.safetensors", WEIGHTS)
        report["shipped"] = str(WEIGHTS)
    (out / "generalist-report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
