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

It ends by printing what it expected against what it saw. Expected counts come from ground truth,
never from running the reader again:

- the damaged shard's real contents: the original shard's members (offsets and sizes) against
  the bytes that survive the cut (the gzip stream decompressed up to it) give the samples that
  must be kept (every member intact and the next header readable) and those that must be lost;
  the reader must yield exactly the kept keys, locally and over HTTP;
- the skipped samples of each training run: the passes over the damaged shard completed by each
  reader up to the position its final checkpoint records, from the documented schedule (shard
  order shuffled by (seed, epoch), every n-th shard per reader) and the true number of items per
  shard. A pass still inside the shuffle buffer at that position may or may not have emitted its
  marker: the expectation is then a range.

Exit status 1 when any count differs (or falls outside its range).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELFSUP = str(Path(sys.executable).with_name("selfsup"))
MODEL = ["encoder.size=custom", "encoder.width=64", "encoder.depth=2", "encoder.heads=4", "encoder.patch_size=4",
         "method.decoder_width=32", "method.decoder_depth=1", "method.decoder_heads=2", "train.accelerator=cpu",
         "train.lr=1e-3", "train.warmup=0.05"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def prepare_shards(source: Path, folder: Path) -> tuple[list[Path], Path, int]:
    """The train shards copied to `folder`, plus `train-000005.tar.gz`: shard 0 cut at 40% + garbage.
    Returns the shards, the original of the damaged one and where it was cut."""
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
    return sorted(folder.glob("train-*.tar.gz")), shards[0], cut


def shard_keys(path: Path) -> list[str]:
    """The sample keys of an intact shard, in order (tarfile, not selfsup's reader)."""
    keys: list[str] = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            folder, _, base = m.name.rpartition("/")
            key = f"{folder}/{base.partition('.')[0]}" if folder else base.partition(".")[0]
            if m.isfile() and (not keys or keys[-1] != key):
                keys.append(key)
    return keys


def kept_after_cut(original: Path, cut: int) -> tuple[list[str], list[str]]:
    """(keys that must be kept, keys that must be lost) of ``original`` cut at byte ``cut``: the
    uncompressed bytes that survive are what zlib decodes from the first ``cut`` bytes; a sample is
    kept when all its members end within them and the next sample's header is there too (only that
    tells a reader the sample is complete)."""
    data = original.read_bytes()
    survive = len(zlib.decompressobj(wbits=31).decompress(data[:cut]))
    spans: dict[str, list[tuple[int, int]]] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        for m in tar:
            folder, _, base = m.name.rpartition("/")
            key = f"{folder}/{base.partition('.')[0]}" if folder else base.partition(".")[0]
            spans.setdefault(key, []).append((m.offset, m.offset_data + m.size))
    order = list(spans)
    kept = [k for i, k in enumerate(order) if all(end <= survive for _, end in spans[k])
            and i + 1 < len(order) and spans[order[i + 1]][0][0] + tarfile.BLOCKSIZE <= survive]
    return kept, [k for k in order if k not in set(kept)]


def read_keys(spec: str) -> list[str]:
    """The keys selfsup's reader yields for ``spec`` read once, in one process."""
    from selfsup.data import open_source

    keys: list[str] = []
    for batch in open_source(spec).loader(256):
        keys += batch["key"]
    return keys


def expected_markers(items: list[int], damaged: int, run: Path, seed: int) -> tuple[int, int]:
    """(fewest, most) "unreadable shard" skips the run must have counted: for each reader, the
    passes over shard ``damaged`` its checkpointed position has completed. ``items``: true items
    per shard (samples, plus the damaged shard's one marker); the schedule is the documented one
    (docs/architecture.md): shard order shuffled by (seed, epoch), reader r of n takes every n-th."""
    from selfsup.data.sources.split import SHUFFLE_BUFFER
    from selfsup.train.checkpoint import safe_torch_load

    positions = safe_torch_load(run / "checkpoints" / "last.ckpt")["selfsup"]["positions"].tolist()
    lo = hi = 0
    for reader, readers, epoch, count in positions:
        for e in range(epoch + 1):
            order = list(range(len(items)))
            random.Random(f"{seed}-{e}").shuffle(order)
            mine = order[reader::readers]
            if damaged not in mine:
                continue
            if e < epoch:
                lo, hi = lo + 1, hi + 1
                continue
            # the marker is the shard's last item; it enters the shuffle buffer as item `arrives` of the
            # epoch and leaves it at the earliest with the next arrival (emission arrives + 1 - buffer),
            # at the latest when the epoch's buffer is flushed
            arrives = sum(items[i] for i in mine[: mine.index(damaged) + 1])
            lo += count >= sum(items[i] for i in mine)
            hi += count >= max(1, arrives + 1 - SHUFFLE_BUFFER)
    return lo, hi


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


def within(want: int | tuple[int, int], saw: int) -> bool:
    lo, hi = want if isinstance(want, tuple) else (want, want)
    return lo <= saw <= hi


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
        shards, original, cut = prepare_shards(a.data, work / "shards")
        local = str(work / "shards" / "train-*.tar.gz")
        kept, lost = kept_after_cut(original, cut)  # ground truth, from the bytes
        items = [len(kept) + 1 if s.name == "train-000005.tar.gz" else len(shard_keys(s)) for s in shards]
        read_local = read_keys(str(work / "shards" / "train-000005.tar.gz"))
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
        read_http = read_keys(f"{url}/train-000005.tar.gz")
        pretrain(["--data", remote, "--method", "mae", "--steps", str(n_http), "--out", str(http_run), *common],
                 work / "http.log").wait()

        m_local, m_http = metrics(run), metrics(http_run)
        skip_local = expected_markers(items, shards.index(work / "shards" / "train-000005.tar.gz"), run, a.seed)
        skip_http = expected_markers([items[4], items[5]], 1, http_run, a.seed)
        n = len(kept) + len(lost)
        rows = [
            ("damaged: samples kept", len(kept), len(read_local), f"of {n}; the reader's keys = the intact ones: "
             f"{read_local == kept}"),
            ("damaged: samples lost", len(lost), n - len(read_local), "per pass"),
            ("http damaged: kept", len(kept), len(read_http), f"same keys: {read_http == kept}"),
            ("local: steps", n_local, int(m_local["steps"]), ""),
            ("local: kills", 1, int(killed), ""),
            ("local: resumes", 1, resumes, ""),
            ("local: skipped samples", skip_local, int(m_local["skipped_samples"]), "unreadable-shard passes"),
            ("http: steps", n_http, int(m_http["steps"]), ""),
            ("http: skipped samples", skip_http, int(m_http["skipped_samples"]), "unreadable-shard passes"),
        ]
        bad = [r for r in rows if not within(r[1], r[2])] + [r for r in rows[:3] if "False" in r[3]]
        print(f"\n{'':26}{'expected':>12}{'saw':>8}")
        for name, want, saw, why in rows:
            shown = f"{want[0]}-{want[1]}" if isinstance(want, tuple) and want[0] != want[1] else (
                want[0] if isinstance(want, tuple) else want)
            note = "   <-- differs" if (name, want, saw, why) in bad else f"   ({why})" if why else ""
            print(f"{name:26}{shown:>12}{saw:>8}{note}")
        print(f"\nsamples never trained on because of the damage: local {int(m_local['skipped_samples'])} x "
              f"{len(lost)}, http {int(m_http['skipped_samples'])} x {len(lost)}")
        print(f"local final loss {m_local['final_loss']:.4f}, http final loss {m_http['final_loss']:.4f}; "
              f"{(time.monotonic() - t0) / 60:.1f} min in all; logs in {work if a.keep else '(removed)'}")
        if bad:
            sys.exit(1)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
