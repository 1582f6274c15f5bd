"""Soak test: train on CIFAR-10 shards with a damaged shard, kill and resume, then stream over HTTP.

    python benchmarks/soak.py --minutes 20        # the full soak (RELIABILITY.md)
    python benchmarks/soak.py --minutes 3         # a quick check that it works

1. The CIFAR-10 train shards are copied to a temporary folder with one extra shard: a copy of a
   real one cut short and filled with garbage (it reads partly, then fails).
2. Calibration: a short run measures steps per second, to size the two phases to --minutes.
3. Local phase: `selfsup pretrain --steps N` on the local copy is SIGKILLed at a random moment
   after its first checkpoint and continued with `--resume`.
4. HTTP phase: `selfsup pretrain --steps M` streams two of the shards, a real one and the
   damaged one (so even a short soak meets it), from `python -m http.server`.

It ends by printing what it expected against what it saw: steps, resumes and skipped samples.
The expected skips come from a clean replay of each data reader's stream up to the position the
final checkpoint records (the damaged shard, and any undecodable image in the real data), so a
resume that lost or repeated data shows.
Exit status 1 when any count differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELFSUP = str(Path(sys.executable).with_name("selfsup"))
MODEL = ["encoder.size=custom", "encoder.width=64", "encoder.depth=2", "encoder.heads=4", "encoder.patch_size=4",
         "method.decoder_width=32", "method.decoder_depth=1", "method.decoder_heads=2", "train.accelerator=cpu",
         "train.lr=1e-3", "train.warmup=0.05"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def prepare_shards(source: Path, folder: Path) -> list[Path]:
    """The train shards copied to `folder`, plus `train-000005.tar.gz`: shard 0 cut at 40% + garbage."""
    folder.mkdir(parents=True)
    shards = sorted(source.glob("train-*.tar.gz"))
    if not shards:
        sys.exit(f"soak: no CIFAR-10 shards in {source} (see ../shared/data/README.md)")
    for s in shards:
        shutil.copy(s, folder / s.name)
    shutil.copy(source / "classes.txt", folder / "classes.txt")
    data = shards[0].read_bytes()
    cut = int(len(data) * 0.4)
    (folder / "train-000005.tar.gz").write_bytes(data[:cut] + random.Random(0).randbytes(len(data) - cut))
    return sorted(folder.glob("train-*.tar.gz"))


def start_http(folder: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                             str(folder), "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proc.stdout.readline().split(" port ")[1].split()[0])
    return proc, f"http://127.0.0.1:{port}"


def pretrain(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "a") as f:
        return subprocess.Popen([SELFSUP, "pretrain", *args], stdout=f, stderr=subprocess.STDOUT, env=env())


def metrics(run: Path) -> dict[str, float]:
    return {r["metric"]: r["mean"] for r in json.loads((run / "metrics.json").read_text())}


def expected_skips(spec: str, run: Path, seed: int) -> tuple[int, str]:
    """Skipped samples in each reader's stream up to its checkpointed position (a clean replay),
    and their reasons."""
    import torch  # noqa: F401  (before selfsup, for a quiet import)

    from selfsup.data import SkipCounter, open_source
    from selfsup.train.checkpoint import safe_torch_load

    positions = safe_torch_load(run / "checkpoints" / "last.ckpt")["selfsup"]["positions"].tolist()
    source = open_source(spec)
    skips = SkipCounter()
    for reader, readers, epoch, count in positions:
        stream = source.dataset(shuffle=True, seed=seed, epoch_repeat=True)
        stream.ranks = (reader, readers)  # one process playing this reader (rank x worker)
        for item in stream:
            if tuple(item["__pos__"][2:]) > (epoch, count):
                break
            if "__skip__" in item:
                skips.add([item["__skip__"]])
    return skips.total, ", ".join(f"{n} {r}" for r, n in skips.by_reason.most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="selfsup-soak-"))
    common = [*MODEL, f"train.batch_size={a.batch_size}", f"data.num_workers={a.workers}", f"train.seed={a.seed}"]
    server = None
    try:
        prepare_shards(a.data, work / "shards")
        local = str(work / "shards" / "train-*.tar.gz")
        print(f"soak: {a.minutes:g} min in {work}; 5 CIFAR-10 shards + 1 damaged, batch {a.batch_size}, "
              f"{a.workers} workers", flush=True)

        cal = work / "calibrate"
        pretrain(["--data", local, "--method", "mae", "--steps", "30", "--out", str(cal), *common],
                 work / "calibrate.log").wait()
        rate = metrics(cal)["images_per_s"] / a.batch_size
        left = a.minutes * 60 - (time.monotonic() - t0) - 75  # ~25 s start-up for each of 3 processes
        n_local, n_http = max(40, int(0.6 * left * rate)), max(20, int(0.4 * left * rate))
        print(f"soak: {rate:.1f} steps/s -> local {n_local} steps (killed once), http {n_http} steps", flush=True)

        run = work / "local"
        args = ["--data", local, "--method", "mae", "--steps", str(n_local), "--out", str(run), *common,
                f"train.ckpt_every={max(5, n_local // 30)}"]
        proc = pretrain(args, work / "local.log")
        while not (run / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(random.uniform(0.2, 0.5) * n_local / rate)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log = work / "local.log"
        before = log.read_text().count("resuming from")
        pretrain(["--resume", str(run)], log).wait()
        resumes = log.read_text().count("resuming from") - before

        server, url = start_http(work / "shards")
        http_run = work / "http"
        remote = f"{url}/train-{{000004,000005}}.tar.gz"
        pretrain(["--data", remote, "--method", "mae", "--steps", str(n_http), "--out", str(http_run), *common],
                 work / "http.log").wait()

        m_local, m_http = metrics(run), metrics(http_run)
        (skip_local, why_local), (skip_http, why_http) = expected_skips(local, run, a.seed), expected_skips(
            remote, http_run, a.seed)
        rows = [
            ("local: steps", n_local, int(m_local["steps"]), ""),
            ("local: kills", 1, int(killed), ""),
            ("local: resumes", 1, resumes, ""),
            ("local: skipped samples", skip_local, int(m_local["skipped_samples"]), why_local),
            ("http: steps", n_http, int(m_http["steps"]), ""),
            ("http: skipped samples", skip_http, int(m_http["skipped_samples"]), why_http),
        ]
        print(f"\n{'':26}{'expected':>10}{'saw':>10}")
        for name, want, saw, why in rows:
            note = "   <-- differs" if want != saw else f"   ({why})" if why else ""
            print(f"{name:26}{want:>10}{saw:>10}{note}")
        print(f"\nlocal final loss {m_local['final_loss']:.4f}, http final loss {m_http['final_loss']:.4f}; "
              f"{(time.monotonic() - t0) / 60:.1f} min in all; logs in {work if a.keep else '(removed)'}")
        if any(want != saw for _, want, saw, _ in rows):
            sys.exit(1)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
