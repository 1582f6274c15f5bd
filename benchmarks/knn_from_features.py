"""Score saved features with selfsup's kNN protocol: the one evaluation for every contender.

    python benchmarks/knn_from_features.py FEATURES.npz [...] [--json]

Each ``.npz`` holds ``train`` (N, F) and ``train_labels`` (N,) (the labelled bank), ``test`` (M, F)
and ``test_labels`` (M,). ``evaluate.knn.knn_probe`` chooses k and standardisation by
leave-one-out on the bank and scores the test set (top-1, ties giving no free credit). Prints a
table, or with ``--json`` records with ``metric: knn_top1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from selfsup.evaluate.knn import knn_probe
from selfsup.evaluate.metrics import expected_top1


def score(path: Path) -> dict:
    z = np.load(path)
    num_classes = int(max(z["train_labels"].max(), z["test_labels"].max()) + 1)
    probs, chosen = knn_probe(torch.from_numpy(z["train"]).float(), z["train_labels"],
                              torch.from_numpy(z["test"]).float(), num_classes)
    rec = {"file": str(path), "metric": "knn_top1", "mean": expected_top1(probs, z["test_labels"]),
           "k": chosen["k"], "standardize": chosen["standardize"], "n_train": len(z["train_labels"]),
           "n_test": len(z["test_labels"])}
    for extra in ("steps", "seconds"):
        if extra in z:
            rec[extra] = float(z[extra])
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    recs = [score(f) for f in args.files]
    if args.json:
        print(json.dumps(recs))
    else:
        for r in recs:
            print(f"{r['file']}\tkNN top-1 {r['mean']:.4f}\t(k {r['k']}, standardize {r['standardize']})")


if __name__ == "__main__":
    main()
