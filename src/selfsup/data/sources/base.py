"""The batch contract every source keeps, skip counting, and the `Source` base class.

A source yields sample dicts (docs/architecture.md, "Samples"); a sample that cannot be decoded
is yielded as a marker `{"__skip__": "KEY: REASON"}` rather than a bare `None` (which could not
say which sample failed). `collate` drops both markers and `None` (recorded as "?: undecodable")
and lists them in the batch's `skipped`, so `SkipCounter` can count skips in the main process
even with worker processes.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from selfsup.data.spec import PAD, PADDED, InputSpec

Ranks = tuple[int, int]  # (rank, world size) a reader plays; None = this process's, from the environment


class SourceError(ValueError):
    """A `--data` spec that cannot be opened (missing path, nothing found, unknown name)."""


def skip(key: str, reason: str) -> dict:
    """The marker a dataset yields for an undecodable sample."""
    return {"__skip__": f"{key}: {reason}"}


def collate(samples: list[dict | None], spec: InputSpec | None = None) -> dict:
    """Samples -> batch: `label` long (B,), `key` and `skipped` lists, and every other field of the
    samples, whatever the modality: tensors of one shape stacked (`image` uint8 or uint16 (B, C, H, W),
    a table's `features` (B, F) and `categories` (B, K)), tensors whose last dimension varies
    padded to the longest with the modality's pad value (`spec.PAD`: 0, NaN for `series`, which
    means "not observed") and `<name>_length` long (B,) added (`audio` float32 (B, T) and
    `audio_length`; `series` (B, C, T) and `series_length`), anything else as a list (`text`).

    Skip markers and `None` are dropped and listed in `skipped` as "KEY: REASON". If every sample
    was skipped the batch has B = 0 (with `spec`, its inputs keep their shape: `spec.empty_inputs()`).
    """
    good, skipped, position = [], [], None
    for s in samples:
        if s is not None and "__pos__" in s:
            position = s["__pos__"]
        if s is None:
            skipped.append("?: undecodable")
        elif "__skip__" in s:
            skipped.append(s["__skip__"])
        else:
            good.append(s)
    batch: dict = {
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "key": [s["key"] for s in good],
        "skipped": skipped,
    }
    if position is not None:
        batch["position"] = position
    if not good:
        batch.update(spec.empty_inputs() if spec else {"image": torch.zeros((0, 0, 0, 0))})
        return batch
    for name in good[0].keys() - {"label", "key", "__pos__"}:
        values = [s[name] for s in good]
        if not isinstance(values[0], torch.Tensor):
            batch[name] = values
        elif all(v.shape == values[0].shape for v in values):
            batch[name] = torch.stack(values)
        else:  # ragged along the last dimension (waveforms, series): pad, keep the lengths
            batch[name], batch[f"{name}_length"] = pad_last(values, PAD.get(name, 0.0))
    return batch


def pad_last(values: list[torch.Tensor], pad: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors (..., T_i) of one dtype -> (B, ..., max T_i) filled with ``pad`` past each one's end, and
    the lengths long (B,). The one padding rule of batches (``collate``) and arrays (``Source.arrays``)."""
    lengths = [int(v.shape[-1]) for v in values]
    padded = values[0].new_full((len(values), *values[0].shape[:-1], max(lengths)), pad)
    for i, v in enumerate(values):
        padded[i, ..., : lengths[i]] = v
    return padded, torch.tensor(lengths, dtype=torch.long)


class SkipCounter:
    """Counts skipped samples from batches' `skipped` lists, by reason ("corrupt", "truncated"...)."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.examples: list[str] = []  # the first few entries, for a log line

    def add(self, batch: dict | list[str]) -> None:
        entries = batch.get("skipped", []) if isinstance(batch, dict) else batch
        for entry in entries:
            _, _, reason = entry.partition(": ")
            self.by_reason[reason.split(":")[0].strip() or "unknown"] += 1
            if len(self.examples) < 10:
                self.examples.append(entry)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self, total: int | None = None) -> str:
        """The one line every command prints about skips, e.g. "skipped 3 samples
        (2 corrupt, 1 truncated; e.g. a.png: corrupt, b.png: truncated)". ``total``: when more were
        skipped than were added here (the engine keeps only the first entries), the true count."""
        n = self.total if total is None else max(int(total), self.total)
        if n == 0:
            return "skipped 0 samples"
        parts = ", ".join(f"{c} {r}" for r, c in self.by_reason.most_common())
        if total is not None and n > self.total:
            parts += f", {n - self.total} more"
        shown = f"; e.g. {', '.join(self.examples[:3])}" if self.examples else ""
        return f"skipped {n} sample{'s' if n != 1 else ''} ({parts}{shown})"


class Source:
    """An opened `--data` spec. Subclasses set `name`, `spec`, `num_samples` and `dataset()`."""

    name: str
    spec: InputSpec
    location: str
    num_samples: int | None = None
    bits: int = 8  # images come out as uint8, or uint16 (16) when the data holds more than 8 bits

    def set_image_size(self, image_size: int) -> None:
        """Read every image at ``image_size`` from now on (samples are resized as they are read)."""
        self.spec.image_size = image_size

    def dataset(
        self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False, ranks: Ranks | None = None
    ) -> Dataset:
        """Map-style (finite, indexable) or IterableDataset of samples / skip markers.

        Streamed and endless datasets split themselves over readers (ranks x DataLoader workers);
        `ranks` = (rank, world size) overrides this process's place, e.g. (0, 1) reads everything.
        """
        raise NotImplementedError

    def sample_id(self, key: str) -> str | None:
        """Where sample ``key`` comes from, comparable across sources (a resolved file, an array
        row), to find a test set that overlaps the labelled pool; None when keys are only unique
        within this source (WebDataset shards: train and test shards often reuse keys)."""
        return None

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        infinite: bool = False,
    ) -> DataLoader:
        """Batches per `collate`. `infinite` loops over epochs (reshuffled each) and never ends.

        Finite map-style sources use a plain shuffling DataLoader, so Lightning can insert its
        DistributedSampler; infinite and streamed ones split themselves by rank and worker.
        """
        ds = self.dataset(shuffle=shuffle, seed=seed, epoch_repeat=infinite)
        mapped = not isinstance(ds, IterableDataset)
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle and mapped,
            generator=torch.Generator().manual_seed(seed) if shuffle and mapped else None,
            num_workers=num_workers,
            drop_last=drop_last,
            collate_fn=partial(collate, spec=self.spec),
            persistent_workers=num_workers > 0 and not infinite,
        )

    def arrays(
        self, max_samples: int | None = None, *, batch_size: int = 256, skips: SkipCounter | None = None,
        keys: list[str] | None = None,
    ) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
        """`max_samples` (default all) inputs and labels int64 (N,), for evaluation sets that fit in memory.

        The inputs are the modality's (`spec.input_keys`): images uint8 or uint16 (N, C, H, W), series float32
        (N, C, T) padded to the longest with NaN, or, for a modality with several keys, a dict of
        arrays (a table's `features` (N, F) and `categories` (N, K)). Inputs of unequal length are
        refused unless the modality says they may be padded (``Modality.padded``: series with NaN, "not
        observed"; waveforms with zeros, as the log-mel front end pads a short clip itself).

        Indexed sources give a fixed random subset (seed 0, in index order), since folders are
        sorted by class; streams give their first samples. Read batch by batch; skipped samples
        are left out (and counted into `skips` when given). `keys`, when given, receives the
        samples' keys in the same order.
        """
        names = self.spec.input_keys
        ds = self.dataset(ranks=(0, 1))  # every rank evaluates on the whole set
        if not isinstance(ds, IterableDataset) and max_samples is not None and max_samples < len(ds):
            pick = np.random.default_rng(0).choice(len(ds), max_samples, replace=False)
            ds = torch.utils.data.Subset(ds, np.sort(pick).tolist())
        xs: dict[str, list[torch.Tensor]] = {k: [] for k in names}
        ys, n = [], 0
        for batch in DataLoader(ds, batch_size=batch_size, collate_fn=partial(collate, spec=self.spec)):
            if skips is not None:
                skips.add(batch)
            for k in names:
                if f"{k}_length" in batch and k not in PADDED:
                    raise TypeError(f"{self.name}: arrays() needs inputs of one shape; these vary in length")
                xs[k].append(batch[k])
            ys.append(batch["label"].numpy())
            if keys is not None:
                keys.extend(batch["key"])
            n += len(ys[-1])
            if max_samples is not None and n >= max_samples:
                break
        empty = self.spec.empty_inputs()
        out = {}
        for k in names:
            parts = [p for p in xs[k] if len(p)]
            if not parts:
                out[k] = empty[k].numpy()
            elif all(p.shape[1:] == parts[0].shape[1:] for p in parts):
                out[k] = torch.cat(parts).numpy()[:max_samples]
            else:  # batches padded to different lengths: pad them all to the longest
                rows = [r for p in parts for r in p]
                out[k] = pad_last(rows, PAD.get(k, 0.0))[0].numpy()[:max_samples]
        y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
        if keys is not None and max_samples is not None:
            del keys[max_samples:]
        x = out[names[0]] if len(names) == 1 else out
        return x, y[:max_samples].astype(np.int64)

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError(f"{self.name}: streamed shards have no known length")
        return self.num_samples

    def __bool__(self) -> bool:  # keep `if source:` working when __len__ cannot answer
        return True

    def __repr__(self) -> str:
        n = "?" if self.num_samples is None else self.num_samples
        return f"{type(self).__name__}({self.name!r}, {self.location!r}, {n} samples, {self.spec})"

