"""Issue 21 benchmark: few-label detection (NEU-DET) or segmentation (CamVid subset) with ``evaluate_dense``.

    nice -n 10 python benchmarks/dense.py --task detect --run REF_OR_RUN --data ../shared/data/dense/neu_det/
        instances_test.json --train-data ../shared/data/dense/neu_det/instances_train.json --fraction 0.1

Writes the records to ``--out`` (metrics.json) and prints them with the wall and CPU time. The recipe knobs
(``--max-steps``, ``--eval-every``, ``--lr-grid``) exist so a busy 2-core machine can afford a run; every
encoder gets the same ones.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from selfsup.api.dense import evaluate_dense
from selfsup.dense.train import DenseRecipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="detect")
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-data")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--protocols", default="linear,finetune")
    ap.add_argument("--baselines", default="scratch")
    ap.add_argument("--foundation")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=DenseRecipe.max_steps)
    ap.add_argument("--eval-every", type=int, default=DenseRecipe.eval_every)
    ap.add_argument("--lr-grid", default=",".join(str(m) for m in DenseRecipe.lr_grid))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared, busy machine)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    recipe = DenseRecipe(max_steps=a.max_steps, eval_every=a.eval_every,
                         lr_grid=tuple(float(m) for m in a.lr_grid.split(",")))
    t0, c0 = time.perf_counter(), time.process_time()
    recs = evaluate_dense(a.run, a.data, task=a.task, train_data=a.train_data, protocols=a.protocols.split(","),
                          baselines=[b for b in a.baselines.split(",") if b], label_fractions=[a.fraction],
                          seeds=a.seeds, image_size=a.image_size, foundation=a.foundation, recipe=recipe, out=a.out,
                          log=lambda s: print(s, flush=True))
    print(json.dumps({"wall_s": round(time.perf_counter() - t0), "cpu_s": round(time.process_time() - c0),
                      "records": len(recs)}), flush=True)


if __name__ == "__main__":
    main()
