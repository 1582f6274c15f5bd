"""Sets of time series (classification): UCR/UEA ``.tsv`` / ``.ts`` / ``.arff`` files and ``.npz`` arrays.

One sample per series: UCR 2018 ``.tsv`` (label first, then the values; trailing NaN pads a
shorter series), sktime/UEA ``.ts`` (``@``-header, then one line per series, dimensions split by
``:``, values by ``,``, the label last; ``?`` = missing; dimensions and series may differ in
length), Weka ``.arff`` (univariate numeric attributes or a UEA ``relational`` attribute for
several dimensions) and ``.npz`` (``series`` or a 3-D ``X`` / ``x`` (N, C, T), or 2-D (N, T) for
one channel; ``y`` / ``labels``; optional ``lengths``). ``read_series`` gives a ``SeriesSet``;
``SeriesSource`` yields ``{"series": float32 (C, T_i), "label", "key"}``, each series at its own
length. One long series cut into windows (forecasting, anomaly detection) is ``sources.windows``.

Unequal lengths are padded, not resampled: resampling would change the time scale, which carries
information (a gesture's speed) and which patch-based encoders assume fixed; the padding is NaN
(collate pads a batch the same way), which the encoders treat as "not observed". Values are kept
as they are: the PatchTST encoder normalises each series itself (RevIN), so no statistic of the
training set is needed to read test data.

A line or series that cannot be read is skipped and counted (``skips``), with the reason; a file
that cannot be read at all raises ``SeriesError`` with a one-line reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup.data.sources.base import SkipCounter, SourceError
from selfsup.data.sources.frame import MISSING, _is_number, class_order, number_name
from selfsup.data.sources.npz import check_npz
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec
from selfsup.data.splits import HOLDOUT_FRACTION, holdout_split


class SeriesError(SourceError):
    """A file that cannot be read as time series at all; the message is one line."""


@dataclass
class SeriesSet:
    """N series in one array. ``values`` float32 (N, C, T) NaN-padded to the longest, ``lengths``
    int64 (N,), ``labels`` int64 (N,) (-1 = none), ``keys``, ``class_names`` in index order."""

    values: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    keys: list[str]
    class_names: list[str] | None = None
    name: str = "series"
    location: str = ""
    skips: SkipCounter = field(default_factory=SkipCounter)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray, note: str | None = None) -> SeriesSet:
        """The same set restricted to ``rows`` (positions), trimmed to its longest series."""
        rows = np.asarray(rows, dtype=np.int64)
        longest = int(self.lengths[rows].max()) if len(rows) else 0
        return SeriesSet(self.values[rows, :, :longest], self.lengths[rows], self.labels[rows],
                         [self.keys[i] for i in rows], self.class_names, self.name, self.location, self.skips,
                         [*self.notes, *([note] if note else [])])

    @property
    def channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def equal_length(self) -> bool:
        return bool((self.lengths == self.values.shape[2]).all())

    def summary(self) -> str:
        lo, hi = int(self.lengths.min()), int(self.lengths.max())
        parts = [f"{len(self)} series", f"{self.channels} channel{'s' if self.channels != 1 else ''}",
                 f"length {hi}" if lo == hi else f"length {lo}..{hi} (NaN-padded)"]
        if self.class_names:
            parts.append(f"{len(self.class_names)} classes")
        if self.skips.total:
            parts.append(self.skips.summary())
        return "; ".join(parts + self.notes)


def _pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Series (C, T_i) -> float32 (N, C, max T_i) NaN-padded, lengths (N,)."""
    lengths = np.array([r.shape[1] for r in rows], np.int64)
    out = np.full((len(rows), rows[0].shape[0], int(lengths.max())), np.nan, np.float32)
    for i, r in enumerate(rows):
        out[i, :, : r.shape[1]] = r
    return out, lengths


def _encode_labels(
    raw: list[str | None], declared: list[str] | None, where: str, skips: SkipCounter, keys: list[str]
) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """Label text -> (indices, class names, usable mask). ``declared`` (a header's class list)
    fixes the order; else numbers sort by value and text alphabetically. A label outside the
    declared classes is skipped as "unknown label"."""
    present = [r for r in raw if r is not None]
    if not present:
        return np.full(len(raw), -1, np.int64), None, np.ones(len(raw), bool)

    def canon(v: str) -> str:
        return number_name(float(v)) if _is_number(v) and np.isfinite(float(v)) else v

    names = [canon(d) for d in declared] if declared else class_order(sorted({canon(r) for r in present}))
    index = {n: i for i, n in enumerate(names)}
    labels, ok = np.full(len(raw), -1, np.int64), np.ones(len(raw), bool)
    for i, r in enumerate(raw):
        if r is None:
            continue
        c = index.get(canon(r))
        if c is None:
            skips.add([f"{keys[i]}: unknown label: {r[:20]!r}"])
            ok[i] = False
        else:
            labels[i] = c
    return labels, names, ok


def _floats(cells: list[str]) -> np.ndarray:
    """Text values -> float32; "?", "NaN", "" and other missing marks -> NaN. Raises ValueError."""
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, counted by non_finite
        return np.array([np.nan if c.strip().lower() in MISSING else float(c) for c in cells], np.float32)


def _trim(row: np.ndarray) -> np.ndarray:
    """Drop trailing all-NaN steps (a UCR row padded to the longest series of its file)."""
    observed = np.flatnonzero(~np.isnan(row).all(axis=0))
    return row[:, : observed[-1] + 1] if len(observed) else row[:, :0]


def _finish(rows, raw_labels, keys, declared, path: Path, skips: SkipCounter, notes: list[str]) -> SeriesSet:
    labels, names, ok = _encode_labels(raw_labels, declared, str(path), skips, keys)
    good = [i for i in range(len(rows)) if ok[i] and rows[i].shape[1] > 0]
    for i in range(len(rows)):
        if ok[i] and rows[i].shape[1] == 0:
            skips.add([f"{keys[i]}: empty series"])
    if not good:
        raise SeriesError(f"{path}: no usable series ({skips.summary()})")
    chans = {rows[i].shape[0] for i in good}
    if len(chans) > 1:
        raise SeriesError(f"{path}: series with different numbers of channels {sorted(chans)}")
    values, lengths = _pad([rows[i] for i in good])
    return SeriesSet(values, lengths, labels[good], [keys[i] for i in good], names, path.stem, str(path),
                     skips, notes)


def read_ucr_tsv(path: str | Path) -> SeriesSet:
    """UCR 2018 ``NAME_TRAIN.tsv``: label, then the values, tab- (or comma- / space-) separated."""
    path = Path(path)
    rows, raw, keys, skips = [], [], [], SkipCounter()
    for n, line in enumerate(_text(path).splitlines(), 1):
        cells = [c for c in re.split(r"[\t,]|\s+", line.strip()) if c != ""]
        if not cells:
            continue
        key = f"{path.stem}/{n}"
        try:
            values = _floats(cells[1:])[None]
        except ValueError:
            skips.add([f"{key}: bad value"])
            continue
        rows.append(_trim(values))
        raw.append(None if cells[0].lower() in MISSING else cells[0])
        keys.append(key)
    return _finish(rows, raw, keys, None, path, skips, [])


def _text(path: Path) -> str:
    if not path.is_file():
        raise SeriesError(f"{path}: no such file")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise SeriesError(f"{path}: binary data, not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_ts(path: str | Path) -> SeriesSet:
    """An sktime / UEA ``.ts`` file: ``@`` header tags, then ``@data`` and one series per line.

    Dimensions are split by ``:`` and values by ``,``; with ``@classLabel true ...`` the last field
    is the label and the declared labels fix the class order. Dimensions and series may differ
    in length (padded with NaN). Time-stamped files (``@timeStamps true``) are not supported.
    """
    path = Path(path)
    tags: dict[str, str] = {}
    rows, raw, keys, skips, notes = [], [], [], SkipCounter(), []
    in_data = False
    for n, line in enumerate(_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower() == "@data":
                in_data = True
                continue
            if line.startswith("@"):
                tag, _, value = line[1:].partition(" ")
                tags[tag.lower()] = value.strip()
            continue
        key = f"{path.stem}/{n}"
        fields = line.split(":")
        labelled = tags.get("classlabel", "false").split()[0].lower() == "true" if tags.get("classlabel") else False
        label = fields.pop().strip() if labelled else None
        try:
            dims = [_floats(f.split(",")) for f in fields]
        except ValueError:
            skips.add([f"{key}: bad value"])
            continue
        want = int(tags.get("dimensions", "1")) if tags.get("univariate", "true").lower() == "false" else 1
        if len(dims) != want:
            skips.add([f"{key}: wrong dimensions: {len(dims)}, the header says {want}"])
            continue
        length = max(len(d) for d in dims)
        row = np.full((len(dims), length), np.nan, np.float32)
        for c, d in enumerate(dims):
            row[c, : len(d)] = d
        rows.append(_trim(row))
        raw.append(label)
        keys.append(key)
    if not in_data:
        raise SeriesError(f"{path}: no @data line: not a .ts file")
    if tags.get("timestamps", "false").lower() == "true":
        raise SeriesError(f"{path}: time-stamped .ts files are not supported; write plain values")
    declared = tags.get("classlabel", "").split()[1:] or None
    if tags.get("equallength", "true").lower() == "false":
        notes.append("unequal lengths (NaN-padded)")
    return _finish(rows, raw, keys, declared, path, skips, notes)


def read_arff(path: str | Path) -> SeriesSet:
    """A Weka ``.arff`` of series: numeric attributes then a nominal class (univariate), or one
    ``relational`` attribute whose value holds the dimensions separated by ``\\n`` (UEA)."""
    path = Path(path)
    text = _text(path)
    m = re.search(r"^\s*@data\s*$", text, flags=re.IGNORECASE | re.MULTILINE)
    if m is None:
        raise SeriesError(f"{path}: no @data line: not an .arff file")
    head, body = text[: m.start()], text[m.end() :]
    outer, inside = [], None  # attributes outside a relational block; the block being read
    for line in head.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].lower() == "@end" and words[1] == inside:
            inside = None
        elif len(words) >= 3 and words[0].lower() == "@attribute" and inside is None:
            kind = line.split(None, 2)[2].strip()
            outer.append(kind)
            if kind.lower().startswith("relational"):
                inside = words[1]
    relational = any(k.lower().startswith("relational") for k in outer)
    labelled = bool(outer) and outer[-1].startswith("{")
    declared = [v.strip().strip("'\"") for v in outer[-1].strip("{}").split(",")] if labelled else None
    rows, raw, keys, skips = [], [], [], SkipCounter()
    for n, line in enumerate(body.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        key = f"{path.stem}/{n}"
        try:
            if relational:
                quoted, _, rest = line[1:].partition(line[0]) if line[0] in "'\"" else ("", "", line)
                label = rest.lstrip(",").strip().strip("'\"") if labelled else None
                dims = [_floats(d.split(",")) for d in quoted.split("\\n")]
            else:
                cells = line.split(",")
                label = cells.pop().strip().strip("'\"") if labelled else None
                dims = [_floats(cells)]
        except ValueError:
            skips.add([f"{key}: bad value"])
            continue
        row = np.full((len(dims), max(len(d) for d in dims)), np.nan, np.float32)
        for c, d in enumerate(dims):
            row[c, : len(d)] = d
        rows.append(_trim(row))
        raw.append(None if label is None or label == "?" else label)
        keys.append(key)
    return _finish(rows, raw, keys, declared, path, skips, [])


def read_series_npz(path: str | Path) -> SeriesSet:
    """``.npz`` with ``series`` (or a 3-D ``X`` / ``x``) (N, C, T) or (N, T); ``y`` / ``labels``;
    optional ``lengths`` (N,) (else trailing all-NaN steps are padding)."""
    path = Path(path)
    members = check_npz(path)  # declared sizes first: a compressed bomb is refused unread
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xkey = "series" if "series" in keys else next(
                (k for k in ("X", "x") if k in keys and len(members[k].shape) == 3), None)
            if xkey is None:
                raise SeriesError(f"{path}: no array series (N, C, T) or 3-D X; arrays: {', '.join(keys)}")
            x = np.asarray(z[xkey], dtype=np.float32)
            ykey = next((k for k in ("y", "Y", "labels", "label") if k in keys), None)
            y = z[ykey].reshape(-1) if ykey else None
            lengths = z["lengths"].astype(np.int64) if "lengths" in keys else None
    except (OSError, ValueError) as e:
        raise SeriesError(f"{path}: not a readable .npz ({e})") from None
    x = x[:, None] if x.ndim == 2 else x
    if x.ndim != 3 or len(x) == 0:
        raise SeriesError(f"{path}: {xkey} should be (N, C, T) or (N, T), not {x.shape}")
    skips = SkipCounter()
    keys_ = [f"{path.stem}/{i}" for i in range(len(x))]
    rows = [x[i][:, : lengths[i]] if lengths is not None else _trim(x[i]) for i in range(len(x))]
    raw = [None] * len(x) if y is None else [str(v.item()) for v in y]
    return _finish(rows, raw, keys_, None, path, skips, [])


def non_finite(data: SeriesSet, bad: str = "missing") -> SeriesSet:
    """Infinite values (``inf`` in the file, or a number beyond float32) as tables treat them
    (``data.bad``): "missing" reads them as missing (NaN) and says how many in ``notes``; "skip"
    skips each series holding one, counted as "not finite". (NaN is already "missing" in a series.)"""
    if bad not in ("missing", "skip"):
        raise SeriesError(f"bad must be 'missing' or 'skip', not {bad!r}")
    inf = np.isinf(data.values)
    if not inf.any():
        return data
    rows = inf.any(axis=(1, 2))
    if bad == "missing":
        data.values[inf] = np.nan
        data.notes.append(f"{int(inf.sum())} infinite values in {int(rows.sum())} series read as missing")
        return data
    for i in np.flatnonzero(rows):
        data.skips.add([f"{data.keys[i]}: not finite"])
    if rows.all():
        raise SeriesError(f"{data.location}: no usable series ({data.skips.summary()})")
    kept = data.take(np.flatnonzero(~rows))
    kept.skips = data.skips
    return kept


def read_series(path: str | Path, *, split: str = "all", bad: str = "missing") -> SeriesSet:
    """A set of series by file kind: ``.ts``, ``.arff``, ``.npz``, else UCR ``.tsv`` / ``.txt``.

    ``split``: "all", or the "train" (70 %) / "test" (30 %) part of a file that holds both,
    stratified by label (``data.splits.holdout_split``, ADBench's rule, seed 0). ``bad``: what an
    infinite value does (``non_finite``).
    """
    if split not in ("all", "train", "test"):
        raise SeriesError(f"split must be one of all, train, test, not {split!r}")
    suffix = Path(path).suffix.lower()
    reader = {".ts": read_ts, ".arff": read_arff, ".npz": read_series_npz}.get(suffix, read_ucr_tsv)
    data = non_finite(reader(path), bad)
    if split == "all":
        return data
    train, test = holdout_split(len(data), data.labels)
    part = train if split == "train" else test
    if not len(part):
        raise SeriesError(f"{path}: too few series for a {split} part")
    return data.take(part, f"the {split} part of a {1 - HOLDOUT_FRACTION:.0%} / {HOLDOUT_FRACTION:.0%} split")


class SeriesSource(IndexedSource):
    """A ``SeriesSet`` as a source of "series" samples ``{"series": float32 (C, T_i), "label", "key"}``."""

    def __init__(self, data: SeriesSet, *, name: str | None = None, location: str | None = None) -> None:
        self.data = data
        self.name, self.location = name or data.name, location or data.location
        self.num_samples = len(data)
        self.spec = InputSpec(
            modality="series", channels=data.channels, image_size=0,
            num_classes=len(data.class_names) if data.class_names else None, class_names=data.class_names,
            series_length=int(data.values.shape[2]), schema={"kind": "series"},
        )

    def sample_id(self, key: str) -> str | None:
        return f"{Path(self.location).resolve()}::{key}"

    def summary(self) -> str:
        return self.data.summary()

    def get(self, i: int) -> dict:
        d = self.data
        return {"series": torch.from_numpy(d.values[i, :, : d.lengths[i]]), "label": int(d.labels[i]), "key": d.keys[i]}


__all__ = [
    "SeriesError", "SeriesSet", "SeriesSource", "read_arff", "read_series", "read_series_npz", "read_ts",
    "read_ucr_tsv",
]
