"""How readers share the data: rank/worker splitting, resume positions, epoch repeat, shuffle buffer.

Endless and streamed datasets tag every item with its position, (reader, readers, epoch, count
read this epoch); `collate` puts the last one in the batch's `position`, the engine keeps the
newest per reader in its checkpoint, and `dataset.resume(positions)` restarts each reader exactly
there, so a resumed run sees the same batches as one never stopped.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from selfsup import distributed
from selfsup.data.sources.base import Ranks, Source, SourceError

SHUFFLE_BUFFER = 1000


def reader_split(ranks: Ranks | None = None, batches: int = 0) -> tuple[int, int]:
    """(this reader's index, number of readers) over distributed ranks x DataLoader workers.

    `ranks` = (rank, world size) given explicitly; else this process's (`selfsup.distributed`).
    `batches` already drawn: a DataLoader takes batch b from worker b % workers, and a new one
    starts again at worker 0, so after a resume worker w plays reader (w + batches) % workers.
    """
    rank, world = ranks if ranks is not None else (distributed.global_rank(), distributed.world_size())
    info = get_worker_info()
    wid, nworkers = ((info.id + batches) % info.num_workers, info.num_workers) if info is not None else (0, 1)
    return rank * nworkers + wid, world * nworkers


Positions = dict[int, tuple[int, int, int]]  # reader -> (readers, epoch, items read in that epoch)


def resume_start(positions: Positions | None, split: int, nsplit: int, epoch: int) -> tuple[int, int]:
    """(epoch, items to pass over) where reader `split` of `nsplit` resumes; (epoch, 0) when new.

    Saved with another number of readers (world size or workers changed), every reader restarts
    at the beginning of the oldest saved epoch: nothing is lost, some samples are seen again.
    """
    if not positions:
        return epoch, 0
    if any(n != nsplit for n, _, _ in positions.values()):
        return min(e for _, e, _ in positions.values()), 0
    _, e, count = positions.get(split, (nsplit, epoch, 0))
    return e, count


class IndexedSource(Source):
    """A source of `num_samples` samples addressed by index (folder, npz, built-ins)."""

    def get(self, i: int) -> dict:
        raise NotImplementedError

    def dataset(
        self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False, ranks: Ranks | None = None
    ) -> Dataset:
        """Finite: map-style (the DataLoader shuffles). `epoch_repeat`: endless iterable over
        per-epoch permutations (seed + epoch), split by rank and worker."""
        return _Repeat(self, shuffle, seed, ranks) if epoch_repeat else _Indexed(self)


class _Indexed(Dataset):
    def __init__(self, source: IndexedSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.num_samples or 0

    def __getitem__(self, i: int) -> dict:
        return self.source.get(i)


class _Repeat(IterableDataset):
    """Endless passes, each a permutation seeded by (seed + epoch): the order is a function of the
    position, so `resume` jumps straight there without reading what came before."""

    def __init__(self, source: IndexedSource, shuffle: bool, seed: int, ranks: Ranks | None = None) -> None:
        self.source, self.shuffle, self.seed = source, shuffle, seed
        self.ranks = ranks
        self.positions: Positions | None = None
        self.batches = 0

    def resume(self, positions: Positions, batches: int = 0) -> None:
        """Start each reader where `positions` left it, `batches` having been drawn before."""
        self.positions, self.batches = dict(positions), batches

    def __iter__(self) -> Iterator[dict]:
        split, nsplit = reader_split(self.ranks, self.batches)
        n = self.source.num_samples or 0
        first, offset = resume_start(self.positions, split, nsplit, 0)
        for epoch in range(first, sys.maxsize):
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            mine = order[split::nsplit] if n >= nsplit else order  # fewer samples than readers: all read all
            start = offset if epoch == first else 0
            good = 0
            for count, i in enumerate(mine[start:].tolist(), start + 1):
                sample = self.source.get(i)
                good += "__skip__" not in sample
                sample["__pos__"] = (split, nsplit, epoch, count)
                yield sample
            if good == 0 and start == 0:
                raise SourceError(f"{self.source.name}: no decodable sample in a whole pass over {n}")


def shuffled(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Shuffle buffer: hold `size` items, emit a random one as each new one arrives."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


