"""CSV tables: numeric feature columns and an optional label column.

    table = read_table("transactions.csv", label="Class")
    table.features  # float32 (N, F)
    table.labels    # int64 (N,) or None

Which columns are features is read from the data unless given: a column is numeric when most of
its cells parse as finite numbers; the others (ids, dates, free text) are left out and listed in
``dropped``. A row with an empty ("missing"), NaN / inf ("nan") or text cell in a numeric column
is skipped and counted with its reason ("nan in V3", "text in Amount"), never imputed: a skipped row shows in
the summary, a silently filled one would not. Labels are non-negative integers, or text mapped
to the sorted class names; a row whose label is neither is skipped as "bad label".
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup.data.sources import SkipCounter

MAX_TABLE_BYTES = 2 * 2**30  # read whole; a bigger file should be sharded first
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TableError(ValueError):
    """A CSV that cannot be used as a table at all; the message is one line."""


@dataclass
class Table:
    features: np.ndarray  # float32 (N, F)
    labels: np.ndarray | None  # int64 (N,)
    columns: list[str]  # the F feature column names
    class_names: list[str] | None = None  # text labels, in index order
    dropped: list[str] = field(default_factory=list)  # columns left out as not numeric
    skips: SkipCounter = field(default_factory=SkipCounter)

    def __len__(self) -> int:
        return len(self.features)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _is_int(cell: str) -> bool:
    return cell.isascii() and cell.isdigit() and len(cell) <= 9  # a class index, not an id


def _usable(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _kind(cell: str) -> str:
    """Why a numeric cell is unusable: "missing", "nan" (NaN, inf), "out of range" (of float32) or "text"."""
    if not cell or cell.lower() in ("na", "n/a", "null", "none", "-", "?"):
        return "missing"
    v = _number(cell)
    return "text" if v is None else "nan" if not math.isfinite(v) else "out of range"


def _is_numeric(cells: list[str]) -> bool:
    values = [_number(c) for c in cells if c.strip()]
    return bool(values) and sum(_usable(v) for v in values) > len(values) / 2


def _read_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise TableError(f"{path}: larger than {MAX_TABLE_BYTES >> 30} GiB; split it first")
    try:
        text = path.read_bytes().decode("utf-8-sig")
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except UnicodeDecodeError:
        raise TableError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise TableError(f"{path}: not a CSV file ({e})") from None


def read_table(path: str | Path, *, label: str | None = None, columns: list[str] | None = None) -> Table:
    """A CSV file with a header row -> ``Table``; raises TableError with a one-line reason."""
    path = Path(path)
    rows = _read_rows(path)
    if len(rows) < 2:
        raise TableError(f"{path}: needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if len(set(header)) != len(header):
        raise TableError(f"{path}: repeated column names in the header")
    for name in [*(columns or []), *([label] if label else [])]:
        if name not in header:
            raise TableError(f"{path}: no column {name!r}; columns: {', '.join(header)[:200]}")
    width = len(header)
    candidates = [j for j, h in enumerate(header) if h != label]
    if columns is not None:
        feats = [header.index(c) for c in columns]
    else:
        feats = [j for j in candidates if _is_numeric([r[j] for r in body if len(r) == width])]
    if not feats:
        raise TableError(f"{path}: no numeric columns")
    y_col = header.index(label) if label else None
    cells = [r[y_col].strip() for r in body if len(r) == width] if y_col is not None else []
    as_int = sum(_is_int(c) for c in cells) > len(cells) / 2
    class_names = None if y_col is None or as_int else sorted({c for c in cells if c})
    class_index = {c: i for i, c in enumerate(class_names or [])}

    skips, xs, ys = SkipCounter(), [], []
    for n, row in enumerate(body, 2):  # n: the line number a user sees in an editor
        if len(row) != width:
            skips.add([f"row {n}: wrong length: {len(row)} cells, the header has {width}"])
            continue
        values = [_number(row[j]) for j in feats]
        bad = next((k for k, v in enumerate(values) if not _usable(v)), None)
        if bad is not None:
            cell = row[feats[bad]].strip()
            skips.add([f"row {n}: {_kind(cell)} in {header[feats[bad]]}: {cell[:20]!r}"])
            continue
        if y_col is not None:
            cell = row[y_col].strip()
            if (as_int and not _is_int(cell)) or (not as_int and cell not in class_index):
                skips.add([f"row {n}: bad label: {cell[:20]!r}"])
                continue
            ys.append(int(cell) if as_int else class_index[cell])
        xs.append(values)
    if not xs:
        raise TableError(f"{path}: no usable rows ({skips.summary()})")
    return Table(
        features=np.asarray(xs, dtype=np.float32),
        labels=np.asarray(ys, dtype=np.int64) if y_col is not None else None,
        columns=[header[j] for j in feats], class_names=class_names,
        dropped=[header[j] for j in candidates if j not in feats], skips=skips,
    )
