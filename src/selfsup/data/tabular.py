"""Tables: CSV / TSV / Parquet / UCI ``.data`` files and ``.npz`` arrays -> numeric + categorical arrays.

    train = read_table("adult/adult.data")                 # names from adult.names, target found by name
    test = read_table("adult/adult.test", schema=train.schema)   # same columns, statistics, vocabularies
    src = TableSource(train)                               # samples per the "table" contract

Reading is two steps. ``read_frame`` turns a file into a DataFrame of text cells (or typed columns
for Parquet and ``.npz``), whatever its encoding (UTF-8, else Latin-1), delimiter (sniffed),
header (the first row when it holds no number, or the names of a UCI ``.names`` file beside it)
and leading comment lines (``|`` or ``#``); a row with more cells than the header is skipped and
counted. Then a ``TableSchema``, fitted on training data only, decides and remembers:

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

import csv
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from selfsup.data.sources import IndexedSource, SkipCounter, SourceError
from selfsup.data.spec import InputSpec

MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none", "-", "--", "#n/a", "<na>"})
TARGET_NAMES = ("label", "target", "class", "y")
MAX_TABLE_BYTES = 2 * 2**30  # read whole; a bigger file should be split (or converted to Parquet) first
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TableError(SourceError):
    """A file that cannot be used as a table at all; the message is one line."""


# --- reading a file into a frame ---------------------------------------------------------------


@dataclass
class Frame:
    """A file read as a DataFrame: text cells (CSV) or typed columns (Parquet, npz)."""

    data: pd.DataFrame
    name: str
    location: str
    skips: SkipCounter = field(default_factory=SkipCounter)
    notes: list[str] = field(default_factory=list)
    default_target: str | None = None  # an .npz's y

    def take(self, rows) -> Frame:
        """The same file restricted to ``rows`` (positions), e.g. the training part of one file."""
        return Frame(self.data.iloc[np.asarray(rows)], self.name, self.location, self.skips, list(self.notes),
                     self.default_target)


def _uci_names(path: Path, ncols: int) -> list[str] | None:
    """Column names from a UCI ``.names`` file beside ``path`` (``adult.test`` -> ``adult.names``).

    Attribute lines read ``name: values.``; the last ``ncols`` of them name the columns, and when
    one is missing the last column is called "class" (the UCI files list the class values first).
    """
    names_file = path.with_suffix(".names")
    if not names_file.is_file():
        return None
    text = names_file.read_bytes().decode("latin-1")
    found = re.findall(r"^([A-Za-z_][\w\-.]*):\s", text, flags=re.MULTILINE)
    if len(found) >= ncols:
        return found[-ncols:]
    if len(found) == ncols - 1:
        return [*found, "class"]
    return None


def _leading_comments(lines: list[str]) -> int:
    n = 0
    for line in lines:
        if line.strip() and not line.lstrip().startswith(("|", "#")):
            break
        n += 1
    return n


def read_frame(
    path: str | Path, *, sep: str | None = None, header: bool | None = None, nrows: int | None = None
) -> Frame:
    """A table file -> ``Frame``; raises TableError with a one-line reason.

    ``.parquet`` / ``.pq`` through pyarrow; ``.npz`` with a 2-D ``X`` (or ``x``, ``features``) and
    optional ``y`` (ADBench's layout) as columns x0..x{F-1} and y; anything else as delimited text.
    ``sep`` / ``header`` override the sniffed delimiter and header row; ``nrows`` reads only the
    first rows of a text file (enough to tell its kind).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise TableError(f"{path}: larger than {MAX_TABLE_BYTES >> 30} GiB; split it or convert it to Parquet")
    name, suffix = path.stem, path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            data = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds
            raise TableError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None
        return Frame(data.reset_index(drop=True), name, str(path))
    if suffix == ".npz":
        return _npz_frame(path)
    head = path.read_bytes()[: 1 << 16]
    encoding = "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of the sample
            encoding = "latin-1"
    lines = head.decode(encoding if encoding == "latin-1" else "utf-8", errors="ignore").splitlines()
    skip = _leading_comments(lines)
    sample = "\n".join(lines[skip : skip + 20])
    if not sample.strip():
        raise TableError(f"{path}: no rows")
    if "\x00" in sample:
        raise TableError(f"{path}: binary data, not a text table")
    if sep is None:
        try:
            sep = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
        except csv.Error:
            sep = "\t" if suffix == ".tsv" else ","
    first = next(csv.reader([lines[skip]], delimiter=sep, skipinitialspace=True))
    names = _uci_names(path, len(first)) if header is None else None
    if header is None and names is None:  # a first row without a single number names the columns
        header = not any(_is_number(c) for c in first)
    frame = Frame(pd.DataFrame(), name, str(path))
    for attempt in (encoding, "latin-1"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = pd.read_csv(
                    path, sep=sep, header=0 if header and names is None else None, names=names, dtype=str,
                    keep_default_na=False, skiprows=skip, skipinitialspace=True, on_bad_lines="warn",
                    encoding=attempt, engine="c", skip_blank_lines=True, nrows=nrows,
                )
                encoding = attempt
                break
            except UnicodeDecodeError:  # a Latin-1 byte past the sniffed head: read it all as Latin-1
                continue
            except pd.errors.EmptyDataError:
                raise TableError(f"{path}: no rows") from None
            except (pd.errors.ParserError, ValueError) as e:
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise TableError(f"{path}: not a readable table ({reason[:120]})") from None
    for w in caught:
        for line, why in re.findall(r"Skipping line (\d+): ([^\n]+)", str(w.message)):
            frame.skips.add([f"line {line}: wrong length: {why.strip()}"])
    if header and names is None and len(set(c.strip() for c in first)) != len(first):
        raise TableError(f"{path}: repeated column names in the header")
    if header is False and names is None:
        data.columns = [f"col{j}" for j in range(data.shape[1])]
    data.columns = [str(c).strip() for c in data.columns]
    if len(set(data.columns)) != len(data.columns):
        raise TableError(f"{path}: repeated column names in the header")
    if encoding == "latin-1":
        frame.notes.append("not UTF-8: read as Latin-1")
    if names is not None:
        frame.notes.append(f"column names from {path.with_suffix('.names').name}")
    frame.data = data
    return frame


def _npz_frame(path: Path) -> Frame:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xkey = next((k for k in ("X", "x", "features") if k in keys), None)
            if xkey is None or z[xkey].ndim != 2:
                raise TableError(f"{path}: no 2-D array X (or x, features); arrays: {', '.join(keys)}")
            x = z[xkey]
            ykey = next((k for k in ("y", "Y", "labels", "label") if k in keys), None)
            y = z[ykey].reshape(-1) if ykey else None
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: not a readable .npz ({e})") from None
    if x.dtype.kind not in "biuf":
        raise TableError(f"{path}: {xkey} holds {x.dtype}, not numbers")
    cols = {f"x{j}": x[:, j] for j in range(x.shape[1])}
    if y is not None:
        if len(y) != len(x):
            raise TableError(f"{path}: {len(x)} rows in {xkey} but {len(y)} in {ykey}")
        cols["y"] = y
    return Frame(pd.DataFrame(cols), path.stem, str(path), default_target="y" if y is not None else None)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


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


def number_name(v: float) -> str:
    """A label that is a number, as a class name: "3" for 3.0, else the shortest exact repr."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _class_order(names: list[str]) -> list[str]:
    """Numbers by value (written without a needless ".0"), else text in sorted order."""
    if names and all(_is_number(n) for n in names):
        return [number_name(v) for v in sorted({float(n) for n in names})]
    return sorted(set(names))


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
    class_names = _class_order([c for c in _canonical(cells, numeric_labels).unique().tolist() if c])
    if not class_names:
        raise TableError(f"{frame.location}: the target column {target!r} has no values")
    if len(class_names) > max_classes:
        raise TableError(f"{frame.location}: the target {target!r} has {len(class_names)} distinct values; "
                         f"classification only (at most {max_classes} classes)")
    return class_names, numeric_labels


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
        if target is None:
            target = frame.default_target or next(
                (c for c in header if c.lower() in TARGET_NAMES and sum(h.lower() == c.lower() for h in header) == 1),
                None,
            )
            if target is not None and frame.default_target is None:
                frame.notes.append(f"target column {target!r} found by its name (pass target= to choose)")
        target = target or None
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
            keys=[f"{frame.name}/{i}" for i in rows], schema=self, name=frame.name, location=frame.location,
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
) -> Table:
    """A table file -> ``Table``. Without ``schema`` one is fitted on this file (training data), or
    on its rows ``fit_rows`` only when one file holds training and test rows (an ADBench ``.npz``
    split 70 / 30; the class names still come from every row); with ``schema`` (a ``TableSchema``
    or its dict) the file is read the way the training file was."""
    frame = read_frame(path, sep=sep, header=header)
    if schema is None:
        fit_on = frame if fit_rows is None else frame.take(fit_rows)
        schema = TableSchema.fit(fit_on, target=target, columns=columns, drop=drop)
        frame.notes[:] = fit_on.notes
        if fit_rows is not None and schema.target:  # the classes are the file's, not a statistic
            schema.class_names, schema.numeric_labels = _classes(frame, schema.target)
    elif isinstance(schema, dict):
        schema = TableSchema.from_dict(schema)
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

    def get(self, i: int) -> dict:
        t = self.table
        return {"features": torch.from_numpy(t.features[i]), "categories": torch.from_numpy(t.categories[i]),
                "label": int(t.labels[i]), "key": t.keys[i]}


def open_table(path: str | Path, *, schema: TableSchema | dict | None = None, **options) -> TableSource:
    """``read_table`` (same options) as a ``TableSource``."""
    return TableSource(read_table(path, schema=schema, **options))


__all__ = ["Frame", "Table", "TableError", "TableSchema", "TableSource", "open_table", "read_frame", "read_table"]
