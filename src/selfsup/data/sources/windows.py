"""One long series (forecasting, anomaly detection) cut into windows.

A CSV with a timestamp column (ETT, weather, NAB: every numeric column is a channel) or a
``.txt`` of one value per line (UCR anomaly archive). ``read_long_series`` gives a ``LongSeries``
(C, T) with point labels where the data has them (NAB's ``combined_windows.json`` found above the
file; the UCR anomaly file name ``<id>_UCR_Anomaly_<name>_<train end>_<start>_<end>.txt``);
``WindowSource`` cuts rows [start, end) into windows of ``window`` steps every ``stride`` steps,
standardised per channel with the mean and std of the training rows (``fit_rows``, saved in
``spec.schema``), labelled 1 when a window holds an anomalous point (0 if not, -1 without point
labels). ``train_end`` says where a file's training part ends (the benchmarks' borders).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from selfsup.data.sources.base import SkipCounter
from selfsup.data.sources.frame import MISSING, read_frame
from selfsup.data.sources.series import SeriesError
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec

TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds")
HOUR_MONTH = 30 * 24  # rows per "month" of hourly ETT data, as the benchmark code counts them
NAB_PROBATION = 0.15  # NAB's detectors learn on the first 15 % of each file without being scored
WINDOW, STRIDE = 128, 16  # default windows of a long series
UCR_ANOMALY = re.compile(r"^\d+_UCR_Anomaly_(?P<name>.+)_(?P<train>\d+)_(?P<start>\d+)_(?P<end>\d+)$")


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
    drop: list[str] | None = None, bad: str = "missing",
) -> LongSeries:
    """A long series file -> ``LongSeries``.

    CSV (any delimiter, UTF-8 or Latin-1): the time column (``time_column``, else one named date /
    time / timestamp / datetime whose cells parse as dates) gives ``timestamps``; every other
    column that is mostly numbers is a channel (``columns`` / ``drop`` choose); a text cell in a
    channel is read as missing and counted in ``notes``. ``.txt``: whitespace-separated numbers,
    one step per line (columns = channels); a UCR anomaly archive name gives the point labels.
    An infinite value (or one beyond float32) is read as missing and counted in ``notes``, whatever
    ``bad`` says: a long series keeps every time step ("skip" cannot drop one without shifting time).
    """
    path = Path(path)
    if bad not in ("missing", "skip"):
        raise SeriesError(f"bad must be 'missing' or 'skip', not {bad!r}")
    series = _read_txt_series(path) if path.suffix.lower() == ".txt" else _read_csv_series(path, time_column,
                                                                                              columns, drop)
    inf = np.isinf(series.values)
    if inf.any():
        series.values[inf] = np.nan
        series.notes.append(f"{int(inf.sum())} infinite values read as missing"
                            + (" (a long series keeps its time steps: not skipped)" if bad == "skip" else ""))
    return series


def _read_csv_series(path: Path, time_column: str | None, columns: list[str] | None,
                     drop: list[str] | None) -> LongSeries:
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
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, counted by read_long_series
            values.append(v.astype(np.float32))
    if not chans:
        raise SeriesError(f"{path}: no numeric columns")
    if imputed:
        frame.notes.append(f"{imputed} text cells read as missing")
    labels = _nab_labels(path, timestamps)
    probation = int(NAB_PROBATION * len(labels)) if labels is not None else None  # NAB's learning period
    return LongSeries(np.stack(values), chans, timestamps, labels, probation, frame.name, str(path), frame.skips,
                      frame.notes)


def _read_txt_series(path: Path) -> LongSeries:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise SeriesError(f"{path}: not a file of numbers ({str(e).splitlines()[0][:100]})") from None
    if values.size == 0:
        raise SeriesError(f"{path}: no values")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, counted by read_long_series
        values = values.T.astype(np.float32)
    labels, train_end, notes = None, None, []
    m = UCR_ANOMALY.match(path.stem)
    if m:  # UCR anomaly archive 2021 (Wu & Keogh): [start, end) anomalous, [0, train_end) normal
        train_end, start, end = int(m["train"]), int(m["start"]), int(m["end"])
        labels = np.zeros(values.shape[1], np.int8)
        labels[start:end] = 1
        notes.append(f"UCR anomaly file: train [0, {train_end}), anomaly [{start}, {end})")
    chans = [f"c{j}" for j in range(values.shape[0])]
    name = f"{path.stem.split('_')[0]}_{m['name']}" if m else path.stem  # "135_InternalBleeding16"
    return LongSeries(values, chans, None, labels, train_end, name, str(path), SkipCounter(), notes)


def forecast_borders(n_rows: int, lookback: int, scheme: str = "ett_hour") -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of "train", "val" and "test" of the long-horizon forecasting benchmarks
    (Zhou et al. 2021, Informer; followed by DLinear and PatchTST); val and test start ``lookback``
    rows early, so their first window forecasts their first row.

    ``scheme``: "ett_hour" (12 / 4 / 4 months of hourly rows), "ett_minute" (the same in 15-minute
    rows) or "ratio" (70 / 10 / 20 % of ``n_rows``, as for weather, electricity, traffic).
    """
    if scheme in ("ett_hour", "ett_minute"):
        m = HOUR_MONTH * (4 if scheme == "ett_minute" else 1)
        ends = [12 * m, 16 * m, 20 * m]
        if n_rows < ends[-1]:
            raise ValueError(f"{scheme} needs {ends[-1]} rows, the data has {n_rows}")
    elif scheme == "ratio":
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        ends = [n_train, n_rows - n_test, n_rows]
    else:
        raise ValueError(f"unknown scheme {scheme!r}; use ett_hour, ett_minute or ratio")
    return {"train": (0, ends[0]), "val": (ends[0] - lookback, ends[1]), "test": (ends[1] - lookback, ends[2])}


def forecast_scheme(series: LongSeries) -> str:
    """The benchmark split a long series follows: ETT's months for ``ETTh*`` / ``ETTm*`` files of full
    length, else 70 / 10 / 20 %."""
    name, n = series.name.lower(), len(series)
    if name.startswith("etth") and n >= 20 * HOUR_MONTH:
        return "ett_hour"
    if name.startswith("ettm") and n >= 80 * HOUR_MONTH:
        return "ett_minute"
    return "ratio"


def training_end(series: LongSeries) -> int:
    """Where the training part of a long series ends: the file's own border (the UCR anomaly archive's
    ``train end``; NAB's 15 % probationary period, Lavin & Ahmad 2015), else the forecasting
    benchmarks' (ETT's first 12 months, or 70 %)."""
    if series.train_end:
        return int(series.train_end)
    return forecast_borders(len(series), 0, forecast_scheme(series))["train"][1]


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

    Rows [start, end) are cut into windows every ``stride`` steps; ``split`` "train" / "test" sets
    them to the rows before / after ``training_end`` (ETT's 12 months, the UCR anomaly file's
    border, NAB's probation). Values are standardised per channel with the mean / std of
    ``fit_rows`` (default: the training part with a ``split``, else [start, end)) or of a saved
    ``schema`` (a run's ``spec.schema``), never of the data being scored.
    """

    def __init__(
        self,
        series: LongSeries,
        *,
        window: int = WINDOW,
        stride: int = STRIDE,
        start: int = 0,
        end: int | None = None,
        fit_rows: tuple[int, int] | None = None,
        schema: dict | None = None,
        split: str = "all",
    ) -> None:
        self.series = series
        self.name, self.location = series.name, series.location
        if window < 1 or stride < 1:
            raise SeriesError(f"{series.location}: window and stride must be at least 1, not {window}, {stride}")
        if split not in ("all", "train", "test"):
            raise SeriesError(f"split must be one of all, train, test, not {split!r}")
        if split != "all":
            border = training_end(series)
            start, end = (0, border) if split == "train" else (border, len(series))
            fit_rows = fit_rows or (0, border)
            series.notes.append(f"the {split} part: rows [{start}, {end})")
        self.split = split
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

    def sample_id(self, key: str) -> str | None:
        return f"{Path(self.location).resolve()}::{key}"

    def summary(self) -> str:
        return f"{len(self.starts)} windows of {self.window} steps every {self.stride}; {self.series.summary()}"

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
    "HOUR_MONTH", "LongSeries", "WindowSource", "channel_stats", "forecast_borders", "read_long_series",
    "training_end", "window_starts",
]
