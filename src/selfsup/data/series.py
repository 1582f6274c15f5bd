"""Time series: UCR/UEA classification files, ``.npz`` arrays, and long series cut into windows.

Two shapes of data, two readers, two sources:

- **a set of series**, one sample each (classification): UCR 2018 ``.tsv`` (label first, then the
  values; trailing NaN pads a shorter series), sktime/UEA ``.ts`` (``@``-header, then one line per
  series, dimensions split by ``:``, values by ``,``, the label last; ``?`` = missing; dimensions
  and series may differ in length), Weka ``.arff`` (univariate numeric attributes or a UEA
  ``relational`` attribute for several dimensions) and ``.npz`` (``series`` or a 3-D ``X`` /
  ``x`` (N, C, T), or 2-D (N, T) for one channel; ``y`` / ``labels``; optional ``lengths``).
  ``read_series`` gives a ``SeriesSet``; ``SeriesSource`` yields ``{"series": float32 (C, T_i),
  "label", "key"}``, each series at its own length.
- **one long series** (forecasting, anomaly detection): a CSV with a timestamp column (ETT,
  weather, NAB: every numeric column is a channel), or a ``.txt`` of one value per line (UCR
  anomaly archive). ``read_long_series`` gives a ``LongSeries`` (C, T) with point labels where the
  data has them (NAB's ``combined_windows.json`` found above the file; the UCR anomaly file name
  ``<id>_UCR_Anomaly_<name>_<train end>_<start>_<end>.txt``); ``WindowSource`` cuts rows
  [start, end) into windows of ``window`` steps every ``stride`` steps, standardised per channel
  with the mean and std of the training rows (``fit_rows``, saved in ``spec.schema``), labelled
  1 when a window holds an anomalous point (0 if not, -1 without point labels).

Unequal lengths are padded, not resampled: resampling would change the time scale, which carries
information (a gesture's speed) and which patch-based encoders assume fixed; the padding is NaN
(collate pads a batch the same way), which the encoders treat as "not observed".

A line or series that cannot be read is skipped and counted (``skips``), with the reason; a file
that cannot be read at all raises ``SeriesError`` with a one-line reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from selfsup.data.sources import IndexedSource, SkipCounter, SourceError
from selfsup.data.spec import InputSpec
from selfsup.data.tabular import MISSING, _class_order, _is_number, number_name, read_frame

TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds")
UCR_ANOMALY = re.compile(r"^\d+_UCR_Anomaly_(?P<name>.+)_(?P<train>\d+)_(?P<start>\d+)_(?P<end>\d+)$")


class SeriesError(SourceError):
    """A file that cannot be read as time series at all; the message is one line."""


# --- a set of series (classification) ----------------------------------------------------------


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

    names = [canon(d) for d in declared] if declared else _class_order(sorted({canon(r) for r in present}))
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
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xkey = "series" if "series" in keys else next((k for k in ("X", "x") if k in keys and z[k].ndim == 3), None)
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


def read_series(path: str | Path) -> SeriesSet:
    """A set of series by file kind: ``.ts``, ``.arff``, ``.npz``, else UCR ``.tsv`` / ``.txt``."""
    suffix = Path(path).suffix.lower()
    reader = {".ts": read_ts, ".arff": read_arff, ".npz": read_series_npz}.get(suffix, read_ucr_tsv)
    return reader(path)


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

    def get(self, i: int) -> dict:
        d = self.data
        return {"series": torch.from_numpy(d.values[i, :, : d.lengths[i]]), "label": int(d.labels[i]), "key": d.keys[i]}


# --- one long series (forecasting, anomaly detection) ------------------------------------------


@dataclass
class LongSeries:
    """One long multichannel series. ``values`` float32 (C, T) (NaN = missing), ``channels`` names,
    ``timestamps`` (T,) datetime64 or None, ``point_labels`` int8 (T,) 1 = anomalous, or None."""

    values: np.ndarray
    channels: list[str]
    timestamps: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    train_end: int | None = None  # the end of the anomaly-free training part, where the file says
    name: str = "series"
    location: str = ""
    skips: SkipCounter = field(default_factory=SkipCounter)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.values.shape[1])

    def summary(self) -> str:
        parts = [f"{len(self)} steps", f"{len(self.channels)} channels"]
        if self.point_labels is not None:
            parts.append(f"{int(self.point_labels.sum())} anomalous points")
        if self.skips.total:
            parts.append(self.skips.summary())
        return "; ".join(parts + self.notes)


def _datetimes(cells: pd.Series) -> pd.Series:
    """Text -> timestamps, NaT where a cell is not one; mixed time zones are put in UTC."""
    for utc in (False, True):
        try:
            return pd.to_datetime(cells, errors="coerce", format="mixed", utc=utc)
        except (ValueError, TypeError, OverflowError):
            continue
    return pd.Series(pd.NaT, index=cells.index, dtype="datetime64[ns]")


def _time_column(frame: pd.DataFrame, name: str | None) -> str | None:
    if name is not None:
        return name
    for c in frame.columns:
        if str(c).strip().lower() in TIME_NAMES:
            cells = frame[c].astype("str").str.strip()
            numbers = pd.to_numeric(cells, errors="coerce").notna().mean()
            parsed = _datetimes(cells).notna().mean()
            if parsed > 0.9 and numbers < 0.5:
                return c
    return None


def _nab_labels(path: Path, timestamps: np.ndarray | None) -> np.ndarray | None:
    """Point labels from NAB's ``combined_windows.json`` in a folder above ``path``, if it lists it."""
    if timestamps is None:
        return None
    for up in list(path.parents)[:4]:
        windows_file = up / "combined_windows.json"
        if windows_file.is_file():
            try:
                windows = json.loads(windows_file.read_text())
                rel = path.resolve().relative_to((up / "data").resolve()).as_posix()
            except (ValueError, OSError):
                return None
            if rel not in windows:
                return None
            labels = np.zeros(len(timestamps), np.int8)
            for start, end in windows[rel]:
                labels[(timestamps >= np.datetime64(pd.Timestamp(start))) &
                       (timestamps <= np.datetime64(pd.Timestamp(end)))] = 1
            return labels
    return None


def read_long_series(
    path: str | Path, *, time_column: str | None = None, columns: list[str] | None = None,
    drop: list[str] | None = None,
) -> LongSeries:
    """A long series file -> ``LongSeries``.

    CSV (any delimiter, UTF-8 or Latin-1): the time column (``time_column``, else one named date /
    time / timestamp / datetime whose cells parse as dates) gives ``timestamps``; every other
    column that is mostly numbers is a channel (``columns`` / ``drop`` choose); a text cell in a
    channel is read as missing and counted in ``notes``. ``.txt``: whitespace-separated numbers,
    one step per line (columns = channels); a UCR anomaly archive name gives the point labels.
    """
    path = Path(path)
    if path.suffix.lower() == ".txt":
        return _read_txt_series(path)
    frame = read_frame(path)
    data = frame.data
    tcol = _time_column(data, time_column)
    if tcol is not None and tcol not in data.columns:
        raise SeriesError(f"{path}: no column {tcol!r}")
    timestamps = None
    if tcol is not None:
        ts = _datetimes(data[tcol].astype("str").str.strip())
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)
        timestamps = ts.to_numpy(dtype="datetime64[ns]")
        if ts.isna().any():
            frame.notes.append(f"{int(ts.isna().sum())} unreadable timestamps")
        elif not ts.is_monotonic_increasing:
            frame.notes.append("timestamps are not in increasing order (kept in file order)")
    names = [c for c in (columns or data.columns) if c != tcol and c not in set(drop or [])]
    chans, values, imputed = [], [], 0
    for c in names:
        if c not in data.columns:
            raise SeriesError(f"{path}: no column {c!r}; columns: {', '.join(map(str, data.columns))[:200]}")
        col = data[c]
        if pd.api.types.is_numeric_dtype(col):
            v = col.to_numpy(np.float64, na_value=np.nan)
        else:
            cells = col.astype("str").str.strip()
            missing = cells.str.lower().isin(MISSING).to_numpy()
            v = pd.to_numeric(cells.where(~missing, ""), errors="coerce").to_numpy(np.float64, na_value=np.nan)
            text = ~missing & np.isnan(v)
            if text.sum() > (~missing).sum() / 2:
                if columns is not None:
                    raise SeriesError(f"{path}: column {c!r} is not numeric")
                continue
            imputed += int(text.sum())
        chans.append(c)
        values.append(np.where(np.isfinite(v), v, np.nan).astype(np.float32))
    if not chans:
        raise SeriesError(f"{path}: no numeric columns")
    if imputed:
        frame.notes.append(f"{imputed} text cells read as missing")
    out = LongSeries(np.stack(values), chans, timestamps, _nab_labels(path, timestamps), None, frame.name,
                     str(path), frame.skips, frame.notes)
    return out


def _read_txt_series(path: Path) -> LongSeries:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise SeriesError(f"{path}: not a file of numbers ({str(e).splitlines()[0][:100]})") from None
    if values.size == 0:
        raise SeriesError(f"{path}: no values")
    values = values.T.astype(np.float32)
    labels, train_end, notes = None, None, []
    m = UCR_ANOMALY.match(path.stem)
    if m:  # UCR anomaly archive 2021 (Wu & Keogh): [start, end) anomalous, [0, train_end) normal
        train_end, start, end = int(m["train"]), int(m["start"]), int(m["end"])
        labels = np.zeros(values.shape[1], np.int8)
        labels[start:end] = 1
        notes.append(f"UCR anomaly file: train [0, {train_end}), anomaly [{start}, {end})")
    chans = [f"c{j}" for j in range(values.shape[0])]
    return LongSeries(values, chans, None, labels, train_end, path.stem, str(path), SkipCounter(), notes)


def channel_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (C, T) values over observed steps (std 1 for a constant channel)."""
    mean = np.nanmean(values, axis=1)
    std = np.nanstd(values, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start indices of the windows of ``window`` steps every ``stride`` steps that fit in ``length``."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, not {window}, {stride}")
    return np.arange(0, max(length - window + 1, 0), stride, dtype=np.int64)


class WindowSource(IndexedSource):
    """Windows of a ``LongSeries`` as "series" samples ``{"series": float32 (C, window), "label", "key"}``.

    Rows [start, end) are cut into windows every ``stride`` steps. Values are standardised per
    channel with the mean / std of ``fit_rows`` (default: [start, end), the training rows) or of
    a saved ``schema`` (a run's ``spec.schema``), never of the data being scored.
    """

    def __init__(
        self,
        series: LongSeries,
        *,
        window: int = 128,
        stride: int = 16,
        start: int = 0,
        end: int | None = None,
        fit_rows: tuple[int, int] | None = None,
        schema: dict | None = None,
    ) -> None:
        self.series = series
        self.name, self.location = series.name, series.location
        if window < 1 or stride < 1:
            raise SeriesError(f"{series.location}: window and stride must be at least 1, not {window}, {stride}")
        end = len(series) if end is None else min(end, len(series))
        self.start, self.end, self.window, self.stride = start, end, window, stride
        if schema is not None:
            if list(schema.get("channels", [])) != list(series.channels):
                raise SeriesError(f"{series.location}: channels {series.channels} differ from the training "
                                  f"data's {schema.get('channels')}")
            mean, std = np.asarray(schema["mean"], np.float32), np.asarray(schema["std"], np.float32)
        else:
            a, b = fit_rows or (start, end)
            mean, std = channel_stats(series.values[:, a:b])
        self.mean, self.std = mean, std
        self.starts = start + window_starts(end - start, window, stride)
        if not len(self.starts):
            raise SeriesError(f"{series.location}: rows [{start}, {end}) are shorter than one window of {window}")
        self.num_samples = len(self.starts)
        self.labels = np.full(len(self.starts), -1, np.int64)
        if series.point_labels is not None:
            cum = np.concatenate([[0], np.cumsum(series.point_labels, dtype=np.int64)])
            self.labels = (cum[self.starts + window] - cum[self.starts] > 0).astype(np.int64)
        self.spec = InputSpec(
            modality="series", channels=len(series.channels), image_size=0,
            num_classes=2 if series.point_labels is not None else None,
            class_names=["normal", "anomaly"] if series.point_labels is not None else None,
            series_length=window,
            schema={"kind": "windows", "channels": list(series.channels), "mean": mean.tolist(),
                    "std": std.tolist(), "window": window, "stride": stride},
        )

    def window_values(self, i: int) -> np.ndarray:
        s = self.starts[i]
        return (self.series.values[:, s : s + self.window] - self.mean[:, None]) / self.std[:, None]

    def get(self, i: int) -> dict:
        return {"series": torch.from_numpy(np.ascontiguousarray(self.window_values(i), dtype=np.float32)),
                "label": int(self.labels[i]), "key": f"{self.name}@{int(self.starts[i])}"}

    def arrays_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All windows float32 (N, C, window) and their labels (N,)."""
        return np.stack([self.window_values(i) for i in range(len(self.starts))]).astype(np.float32), self.labels


__all__ = [
    "LongSeries", "SeriesError", "SeriesSet", "SeriesSource", "WindowSource", "channel_stats", "read_arff",
    "read_long_series", "read_series", "read_series_npz", "read_ts", "read_ucr_tsv", "window_starts",
]
