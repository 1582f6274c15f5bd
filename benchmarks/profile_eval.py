"""Where evaluation's time goes (issue 22): decoding, feature extraction (batch size, fp32 vs bf16,
channels-last), kNN and the linear probe, on the CIFAR-10 test shard (10,000 images), in CPU seconds of
this process (``time.process_time``), so a busy machine does not change the numbers much.

    OMP_NUM_THREADS=1 python benchmarks/profile_eval.py [--data ../shared/data/cifar10/test-000000.tar.gz]
"""

from __future__ import annotations

import argparse
import json
import time

import _passive_omp  # noqa: F401  (before torch)
import numpy as np
import torch

from selfsup.data import open_source
from selfsup.data.spec import InputSpec
from selfsup.data.splits import sample_few
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.knn import knn_probe
from selfsup.evaluate.linear import linear_classifier


def cpu_seconds(fn):
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data/cifar10/test-000000.tar.gz")
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    rows = {}
    src = open_source(a.data, image_size=32, channels=3)
    (x, y), rows["decode"] = cpu_seconds(lambda: src.arrays(a.n))
    torch.manual_seed(0)
    cfg = EncoderConfig(size="custom", width=128, depth=4, heads=4, patch_size=4, pool="avg")  # the CPU default ViT
    enc = build_encoder(cfg, InputSpec(image_size=32, channels=3)).eval()
    feats = None
    for bs in (64, 256, 1024):
        feats, rows[f"extract fp32 batch {bs}"] = cpu_seconds(
            lambda bs=bs: extract_features(enc, x, bs, precision="fp32"))
    _, rows["extract bf16 batch 256"] = cpu_seconds(lambda: extract_features(enc, x, 256, precision="bf16"))
    enc_cl = enc.to(memory_format=torch.channels_last)
    _, rows["extract fp32 batch 256 channels-last"] = cpu_seconds(
        lambda: extract_features(enc_cl, torch.as_tensor(x).contiguous(memory_format=torch.channels_last), 256,
                                 precision="fp32"))
    pool, test = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    for shots in (10, 500):
        idx = pool[sample_few(y[pool], shots=shots, seed=0)]
        _, rows[f"knn {shots}-shot ({len(idx)} labels, {len(test)} queries)"] = cpu_seconds(
            lambda idx=idx: knn_probe(feats[idx], y[idx], feats[test], 10))
        _, rows[f"linear {shots}-shot ({len(idx)} labels)"] = cpu_seconds(
            lambda idx=idx: linear_classifier(feats[idx], y[idx], feats[test], 10, 0))
    n = len(y)
    for k, v in rows.items():
        per = f"{n / v:,.0f} img/CPU-s" if k.startswith(("decode", "extract")) else ""
        print(f"| {k} | {v:.1f} | {per} |")
    print(json.dumps({"n": n, "threads": torch.get_num_threads(), "cpu_seconds": rows}))


if __name__ == "__main__":
    main()
