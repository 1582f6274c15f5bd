"""lightly's own CIFAR-10 SimCLR recipe, timed like a selfsup run: the peer side of
benchmarks/quality_vs_lightly.sh. Runs in the peer environment (../shared/peers/setup.sh), never in
the project's.

The recipe is lightly's CIFAR-10 benchmark (lightly/benchmarks, ``SimCLRModel``): ResNet-18 of
``ResNetGenerator("resnet-18")`` + global pooling, ``SimCLRProjectionHead(512, 512, 128)``,
``NTXentLoss()`` (temperature 0.5), ``SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0.0)``, SGD lr 0.06 x batch / 128, momentum 0.9, weight decay 5e-4, batch 512, a
cosine schedule. The only change: the cosine schedule is sized to the time budget (the step time
measured on the first steps), as selfsup's budget clock does, instead of to 800 epochs. Time is
this process's CPU time, like ``selfsup pretrain ... train.clock=cpu``, so both contenders get the
same compute on a shared machine.

At each snapshot time the backbone's pooled features of the 50,000 training and 10,000 test
images (lightly's evaluation transform: ToTensor + ImageNet normalisation) go to
``OUT/features-<time>.npz``; benchmarks/knn_from_features.py scores them with selfsup's kNN, the
same evaluation as selfsup's own snapshots.

    $PEER_PY benchmarks/peers/lightly_simclr_cifar10.py --data ../shared/data/cifar10 --budget 30m \\
        --snapshots 5m,10m,30m --out runs/qps/lightly
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from lightly.loss import NTXentLoss
from lightly.models import ResNetGenerator
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch import nn


def seconds(text: str) -> float:
    unit = {"h": 3600, "m": 60, "s": 1, "": 1}
    return sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms]?)", text))


def read_shards(paths: list[Path]) -> tuple[list[Image.Image], np.ndarray]:
    images, labels, pending = [], [], {}
    for path in paths:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = m.name.rsplit(".", 1)
                pending.setdefault(key, {})[ext] = tar.extractfile(m).read()
                if {"jpg", "cls"} <= pending[key].keys():
                    s = pending.pop(key)
                    images.append(Image.open(io.BytesIO(s["jpg"])).convert("RGB"))
                    labels.append(int(s["cls"]))
    return images, np.asarray(labels)


class Views(torch.utils.data.Dataset):
    def __init__(self, images: list[Image.Image], transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


class SimCLRModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        resnet = ResNetGenerator("resnet-18")
        self.backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1))
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


@torch.no_grad()
def features(backbone: nn.Module, images: list[Image.Image], batch: int = 500) -> np.ndarray:
    tf = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    backbone.eval()
    out = [backbone(torch.stack([tf(im) for im in images[i : i + batch]])).flatten(1).numpy()
           for i in range(0, len(images), batch)]
    backbone.train()
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--snapshots", default="5m,10m,30m")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = read_shards(sorted(args.data.glob("train-*.tar.gz")))
    test_images, test_labels = read_shards(sorted(args.data.glob("test-*.tar.gz")))
    loader = torch.utils.data.DataLoader(
        Views(train_images, SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)),
        batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0)
    model, criterion = SimCLRModel(), NTXentLoss()
    lr = 6e-2 * args.batch_size / 128
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    budget, snaps = seconds(args.budget), sorted((seconds(s), s) for s in args.snapshots.split(","))
    t0, step, total, log = time.process_time(), 0, None, []
    while True:
        for views in loader:
            elapsed = time.process_time() - t0
            if step == 20:  # the cosine schedule ends when the budget does
                total = max(step + 1, int(budget / (elapsed / step)))
            for g in optim.param_groups:
                g["lr"] = lr if total is None else lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
            z0, z1 = model(views[0]), model(views[1])
            loss = criterion(z0, z1)
            optim.zero_grad()
            loss.backward()
            optim.step()
            step += 1
            elapsed = time.process_time() - t0
            if step % 20 == 0:
                log.append((step, elapsed, float(loss)))
                print(f"step {step}/{total}  loss {float(loss):.4f}  {elapsed:.0f}s cpu", flush=True)
            while snaps and elapsed >= snaps[0][0]:
                _, name = snaps.pop(0)
                t_pause = time.process_time()
                np.savez(args.out / f"features-{name}.npz", train=features(model.backbone, train_images),
                         train_labels=train_labels, test=features(model.backbone, test_images),
                         test_labels=test_labels, steps=step, seconds=elapsed)
                t0 += time.process_time() - t_pause  # feature extraction is not training time
            if elapsed >= budget:
                (args.out / "log.json").write_text(json.dumps({"recipe": "lightly cifar10 SimCLR", "steps": step,
                                                               "total_steps": total, "loss": log}))
                return


if __name__ == "__main__":
    main()
