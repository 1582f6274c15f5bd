"""Tables: CSV / TSV / Parquet / UCI ``.data`` files and ``.npz`` arrays -> numeric + categorical arrays.

    train = read_table("adult/adult.data")                 # names from adult.names, target found by name
    test = read_table("adult/adult.test", schema=train.schema)   # same columns, statistics, vocabularies
    src = TableSource(train)                               # samples per the "table" contract

Reading is two steps. ``sources.frame.read_frame`` turns a file into a DataFrame (any encoding,
delimiter, header, UCI ``.names``). Then a ``TableSchema``, fitted on training data only, decides
and remembers:

- the target column (``target=``; without it a column named label / target / class / y, or an
  ``.npz``'s ``y``; ``target=""`` for none) and its class names (text labels lose surrounding
  space and one trailing ``.``, as in UCI test files; numbers sort by value);
- the kind of each feature column: *numeric* when more than half of its filled cells are finite
  numbers; *categorical* when it is text repeating enough (at most half as many distinct values as
  filled cells, or any repeat in a column of at most 20 cells; at most ``max_categories``);
  anything else (ids, free text, dates) is left out and listed in ``schema.dropped`` with the
  reason. ``columns=`` / ``drop=`` choose by name;
- per numeric column the mean and standard deviation of the observed training values, and per
  categorical column its vocabulary (index 0 is kept for missing or unseen values).

``TableSchema.transform`` applies that to any frame: numeric values are standardised and a missing
cell ("", ?, NA, NaN, null, ...) becomes NaN, which the encoder embeds as "missing"; text or an
infinite value in a numeric column is, by ``bad=``, read as missing and reported ("missing", the
default: ``Table.imputed`` counts it per column) or the row is skipped and counted ("skip").
A row without a usable label is skipped ("missing label", "unknown label"). Nothing in a cell
stops the read; a file that cannot be a table at all raises ``TableError`` with a one-line reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from selfsup.data.sources.base import SkipCounter
from selfsup.data.sources.frame import (
    FLOAT32_MAX,
    MISSING,
    Frame,
    TableError,
    class_order,
    number_name,
    read_frame,
)
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec
from selfsup.data.splits import HOLDOUT_FRACTION, holdout_split

TARGET_NAMES = ("label", "target", "class", "y")
SPLITS = ("all", "train", "test")


# --- the schema: what is a feature, how it is scaled, which categories exist -------------------


def _cells(col: pd.Series) -> pd.Series:
    """A column as stripped text (typed columns are turned into text first)."""
    return col.astype("str").str.strip().fillna("")  # None / NA in a typed column -> "" (missing)


def _missing(cells: pd.Series) -> np.ndarray:
    return cells.str.lower().isin(MISSING).to_numpy()


def _numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values with NaN where unusable, missing mask, text mask) of one column."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, np.isnan(values), np.zeros(len(values), bool)
    cells = _cells(col)
    missing = _missing(cells)
    values = pd.to_numeric(cells.where(~missing, ""), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    text = ~missing & np.isnan(values)
    return values, missing, text


def _label_text(cells: pd.Series) -> pd.Series:
    """Label cells as class names: stripped, one trailing "." dropped (UCI test files: ">50K.")."""
    return cells.str.replace(r"\.$", "", regex=True).str.strip()


def _canonical(cells: pd.Series, numeric: bool) -> pd.Series:
    if not numeric:
        return cells
    values = pd.to_numeric(cells, errors="coerce")
    return values.map(lambda v: "" if pd.isna(v) or not np.isfinite(v) else number_name(v))


def _classes(frame: Frame, target: str, max_classes: int = 1000) -> tuple[list[str], bool]:
    """(class names in index order, whether the labels are numbers) of ``frame``'s target column."""
    cells = _label_text(_cells(frame.data[target]))
    cells = cells[~_missing(cells)]
    # mostly numbers: the labels are numbers, and a text cell among them is a bad label
    numeric_labels = bool(pd.to_numeric(cells, errors="coerce").notna().sum() > len(cells) / 2)
    class_names = class_order([c for c in _canonical(cells, numeric_labels).unique().tolist() if c])
    if not class_names:
        raise TableError(f"{frame.location}: the target column {target!r} has no values")
    if len(class_names) > max_classes:
        raise TableError(f"{frame.location}: the target {target!r} has {len(class_names)} distinct values; "
                         f"classification only (at most {max_classes} classes)")
    return class_names, numeric_labels


def find_target(frame: Frame, target: str | None) -> str | None:
    """The label column: ``target`` ("" for none), else an ``.npz``'s ``y``, else the one column named
    label / target / class / y (noted in ``frame.notes``), else None."""
    if target is None:
        header = list(frame.data.columns)
        target = frame.default_target or next(
            (c for c in header if c.lower() in TARGET_NAMES and sum(h.lower() == c.lower() for h in header) == 1),
            None,
        )
        if target is not None and frame.default_target is None:
            note = f"target column {target!r} found by its name (pass target= to choose)"
            if note not in frame.notes:
                frame.notes.append(note)
    return target or None


@dataclass
class TableSchema:
    """What a table's training data decided: feature columns, their kinds and statistics, classes.

    Saved as a plain dict (``to_dict``) in the input spec of a run, so test data is read with the
    training statistics and vocabularies, never its own.
    """

    numeric: list[str]
    categorical: list[str]
    mean: list[float]
    std: list[float]
    vocab: dict[str, list[str]]  # categorical column -> its values; index i + 1 in the samples
    target: str | None = None
    class_names: list[str] | None = None
    numeric_labels: bool = False  # the labels were numbers: compare them by value
    dropped: dict[str, str] = field(default_factory=dict)  # left-out column -> why

    @property
    def cardinalities(self) -> list[int]:
        """Per categorical column, its number of categories + 1 (index 0 = missing / unseen)."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def to_dict(self) -> dict:
        return {"kind": "table", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TableSchema:
        return cls(**{k: v for k, v in d.items() if k != "kind"})

    @classmethod
    def fit(
        cls,
        frame: Frame,
        *,
        target: str | None = None,
        columns: list[str] | None = None,
        drop: list[str] | None = None,
        max_categories: int = 256,
        max_classes: int = 1000,
    ) -> TableSchema:
        """Decide the schema from (training) ``frame``; see the module docstring for the rules."""
        data, where = frame.data, frame.location
        header = list(data.columns)
        target = find_target(frame, target)
        for c in [*(columns or []), *(drop or []), *([target] if target else [])]:
            if c not in header:
                raise TableError(f"{where}: no column {c!r}; columns: {', '.join(header)[:200]}")
        chosen = list(columns) if columns is not None else [c for c in header if c != target]
        chosen = [c for c in chosen if c not in set(drop or []) and c != target]
        numeric, categorical, mean, std, vocab, dropped = [], [], [], [], {}, {}
        for c in chosen:
            values, missing, text = _numbers(data[c])
            filled = int((~missing).sum())
            finite = np.isfinite(values) & (np.abs(values) <= FLOAT32_MAX)
            if filled and finite.sum() > filled / 2:
                numeric.append(c)
                v = values[finite]
                mean.append(float(v.mean()))
                s = float(v.std())
                std.append(s if s > 1e-12 * max(1.0, abs(mean[-1])) else 1.0)
                continue
            cells = _cells(data[c])[~missing]
            distinct = cells.unique().tolist()
            forced = columns is not None
            k = len(distinct)
            repeats = 2 * k <= filled or (filled <= 20 and k < filled)  # small tables: any repeat will do
            if filled and (forced or (k <= max_categories and repeats)):
                categorical.append(c)
                vocab[c] = sorted(str(v) for v in distinct)
            else:
                dropped[c] = ("empty" if not filled else f"text with {len(distinct)} distinct values in "
                              f"{filled} cells (an id or free text?)")
        if not numeric and not categorical:
            why = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:3])
            raise TableError(f"{where}: no usable feature columns" + (f" ({why})" if why else ""))
        class_names, numeric_labels = _classes(frame, target, max_classes) if target else (None, False)
        return cls(numeric, categorical, mean, std, vocab, target, class_names, numeric_labels, dropped)

    def transform(self, frame: Frame, *, bad: str = "missing") -> Table:
        """``frame`` -> ``Table`` with this schema's columns, statistics and vocabularies.

        ``bad``: what text or an infinite / out-of-range value in a numeric column does: "missing"
        (read as missing, counted in ``Table.imputed``) or "skip" (the row is skipped and counted).
        """
        if bad not in ("missing", "skip"):
            raise TableError(f"bad must be 'missing' or 'skip', not {bad!r}")
        data, skips = frame.data, SkipCounter()
        skips.by_reason.update(frame.skips.by_reason)
        skips.examples.extend(frame.skips.examples)
        absent = [c for c in [*self.numeric, *self.categorical, *([self.target] if self.target else [])]
                  if c not in data.columns]
        if absent:
            raise TableError(f"{frame.location}: no column {absent[0]!r} that the training table had; "
                             f"columns: {', '.join(map(str, data.columns))[:200]}")
        n = len(data)
        keep = np.ones(n, bool)
        why = np.full(n, "", dtype=object)
        imputed: Counter[str] = Counter()
        x = np.empty((n, len(self.numeric)), np.float32)
        for j, c in enumerate(self.numeric):
            values, missing, text = _numbers(data[c])
            out_of_range = ~missing & ~text & ~(np.isfinite(values) & (np.abs(values) <= FLOAT32_MAX))
            for mask, kind in ((text, "text"), (out_of_range, "not finite")):
                if mask.any():
                    if bad == "skip":
                        why[mask & keep] = f"{kind} in {c}"
                        keep &= ~mask
                    else:
                        imputed[f"{kind} in {c}"] += int(mask.sum())
            values = np.where(text | out_of_range, np.nan, values)
            x[:, j] = (values - self.mean[j]) / self.std[j]
        cats = np.zeros((n, len(self.categorical)), np.int64)
        for j, c in enumerate(self.categorical):
            cells = _cells(data[c])
            missing = _missing(cells)
            index = {v: i + 1 for i, v in enumerate(self.vocab[c])}
            codes = cells.map(index).fillna(0).to_numpy(dtype=np.int64)
            unseen = ~missing & (codes == 0)
            if unseen.any():
                imputed[f"unseen category in {c}"] += int(unseen.sum())
            cats[:, j] = codes
        labels = np.full(n, -1, np.int64)
        if self.target:
            cells = _label_text(_cells(data[self.target]))
            missing = _missing(cells)
            index = {v: i for i, v in enumerate(self.class_names or [])}
            codes = _canonical(cells, self.numeric_labels).map(index)
            unknown = ~missing & codes.isna().to_numpy()
            why[missing & keep] = "missing label"
            why[unknown & keep] = "bad label" if self.numeric_labels else "unknown label"
            keep &= ~missing & ~unknown
            labels = codes.fillna(-1).to_numpy(dtype=np.int64)
        rows = np.flatnonzero(keep)
        skips.add([f"row {i}: {why[i]}" for i in np.flatnonzero(~keep)])
        if not len(rows):
            raise TableError(f"{frame.location}: no usable rows ({skips.summary()})")
        return Table(
            features=x[rows], categories=cats[rows], labels=labels[rows],
            keys=[f"{frame.name}/{data.index[i]}" for i in rows], schema=self, name=frame.name, location=frame.location,
            skips=skips, imputed=imputed, notes=list(frame.notes),
        )


@dataclass
class Table:
    """A table in model form. ``features`` float32 (N, F) standardised, NaN = missing;
    ``categories`` int64 (N, K), 0 = missing / unseen; ``labels`` int64 (N,), -1 = none."""

    features: np.ndarray
    categories: np.ndarray
    labels: np.ndarray
    keys: list[str]
    schema: TableSchema
    name: str = "table"
    location: str = ""
    skips: SkipCounter = field(default_factory=SkipCounter)
    imputed: Counter = field(default_factory=Counter)  # "text in Amount" -> cells read as missing
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    def summary(self) -> str:
        """One line for a log: rows, columns by kind, skips, imputed cells and notes."""
        s = self.schema
        parts = [f"{len(self)} rows", f"{len(s.numeric)} numeric + {len(s.categorical)} categorical columns"]
        if s.target:
            parts.append(f"target {s.target!r} ({len(s.class_names or [])} classes)")
        if s.dropped:
            parts.append(f"left out {', '.join(s.dropped)}")
        if self.skips.total:
            parts.append(self.skips.summary())
        if self.imputed:
            parts.append("read as missing: " + ", ".join(f"{n} {k}" for k, n in self.imputed.most_common()))
        return "; ".join(parts + self.notes)


def read_table(
    path: str | Path,
    *,
    target: str | None = None,
    columns: list[str] | None = None,
    drop: list[str] | None = None,
    schema: TableSchema | dict | None = None,
    bad: str = "missing",
    sep: str | None = None,
    header: bool | None = None,
    fit_rows=None,
    split: str = "all",
) -> Table:
    """A table file -> ``Table``. Without ``schema`` one is fitted on this file (training data), or
    on its rows ``fit_rows`` only when one file holds training and test rows (the class names still
    come from every row); with ``schema`` (a ``TableSchema`` or its dict) the file is read the way
    the training file was.

    ``split``: "all" rows, or the "train" (70 %) or "test" (30 %) part of a file that holds both,
    split as ADBench splits its sets (``data.splits.holdout_split``: stratified by the target
    column when there is one, seed 0); the statistics are then fitted on the training part only.
    Keys keep the file's row numbers ("NAME/ROW").
    """
    if split not in SPLITS:
        raise TableError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    frame = read_frame(path, sep=sep, header=header)
    part = None
    if split != "all":
        tcol = find_target(frame, schema.get("target") if isinstance(schema, dict) else
                           schema.target if schema is not None else target)
        strata = _label_text(_cells(frame.data[tcol])).to_numpy() if tcol in frame.data.columns else None
        train, test = holdout_split(len(frame.data), strata)
        fit_rows = train if fit_rows is None else fit_rows
        part = train if split == "train" else test
    if schema is None:
        fit_on = frame if fit_rows is None else frame.take(fit_rows)
        schema = TableSchema.fit(fit_on, target=target, columns=columns, drop=drop)
        frame.notes[:] = fit_on.notes
        if fit_rows is not None and schema.target:  # the classes are the file's, not a statistic
            schema.class_names, schema.numeric_labels = _classes(frame, schema.target)
    elif isinstance(schema, dict):
        schema = TableSchema.from_dict(schema)
    if part is not None:
        frame = frame.take(part)
        frame.notes.append(f"the {split} part ({len(part)} rows) of a {1 - HOLDOUT_FRACTION:.0%} / "
                           f"{HOLDOUT_FRACTION:.0%} split (ADBench's)")
    return schema.transform(frame, bad=bad)


class TableSource(IndexedSource):
    """A ``Table`` as a source of "table" samples:
    ``{"features": float32 (F,), "categories": int64 (K,), "label": int, "key": str}``."""

    def __init__(self, table: Table, *, name: str | None = None, location: str | None = None) -> None:
        self.table = table
        self.name, self.location = name or table.name, location or table.location
        self.num_samples = len(table)
        s = table.schema
        self.spec = InputSpec(
            modality="table", channels=1, image_size=0,
            num_classes=len(s.class_names) if s.class_names else None, class_names=s.class_names,
            num_features=len(s.numeric), cardinalities=s.cardinalities, schema=s.to_dict(),
        )

    def sample_id(self, key: str) -> str | None:
        return f"{Path(self.location).resolve()}::{key}"

    def summary(self) -> str:
        return self.table.summary()

    def get(self, i: int) -> dict:
        t = self.table
        return {"features": torch.from_numpy(t.features[i]), "categories": torch.from_numpy(t.categories[i]),
                "label": int(t.labels[i]), "key": t.keys[i]}


def open_table(path: str | Path, *, schema: TableSchema | dict | None = None, **options) -> TableSource:
    """``read_table`` (same options) as a ``TableSource``."""
    return TableSource(read_table(path, schema=schema, **options))


__all__ = [
    "SPLITS", "Frame", "Table", "TableError", "TableSchema", "TableSource", "find_target", "open_table", "read_frame",
    "read_table",
]
