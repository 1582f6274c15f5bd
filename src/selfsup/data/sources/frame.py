"""Reading a table file into a DataFrame: CSV / TSV / Parquet / UCI ``.data`` files and ``.npz`` arrays.

``read_frame`` turns a file into a DataFrame of text cells (or typed columns for Parquet and
``.npz``), whatever its encoding (UTF-8, else Latin-1), delimiter (sniffed), header (the first
row when it holds no number, or the names of a UCI ``.names`` file beside it) and leading comment
lines (``|`` or ``#``); a row with more cells than the header is skipped and counted. What the
cells mean (numbers, categories, labels) is decided by ``sources.table``; long series read their
CSV here too (``sources.windows``). A file that cannot be a table at all raises ``TableError``
with a one-line reason.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from selfsup.data.sources.base import SkipCounter, SourceError
from selfsup.data.sources.npz import check_npz

MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none", "-", "--", "#n/a", "<na>"})
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


MAX_HEADER_BYTES = 16 << 20  # a header line longer than this is not a table's


def _head(path: Path) -> bytes:
    """The start of a text table: 64 KiB, or more until the header line (the first line that is not
    a comment) and the line after it are whole (wide tables: 20,000 names do not fit in 64 KiB).
    Never the whole file; a header line past ``MAX_HEADER_BYTES`` is refused."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        while True:
            lines = head.split(b"\n")
            complete = len(lines) - 1  # lines ended by a newline
            skip = _leading_comments([x.decode("latin-1") for x in lines[:complete]])
            if complete >= skip + 2:
                return head
            more = f.read(1 << 20) if len(head) < MAX_HEADER_BYTES else b""
            if not more:
                if complete <= skip and len(head) >= MAX_HEADER_BYTES:
                    raise TableError(f"{path}: no line break in the first {MAX_HEADER_BYTES >> 20} MiB; "
                                     "not a text table")
                return head
            head += more


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
    head = _head(path)
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
    members = check_npz(path)  # declared sizes first: a compressed bomb is refused unread
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xkey = next((k for k in ("X", "x", "features") if k in keys), None)
            if xkey is None or len(members[xkey].shape) != 2:
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


def number_name(v: float) -> str:
    """A label that is a number, as a class name: "3" for 3.0, else the shortest exact repr."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def class_order(names: list[str]) -> list[str]:
    """Numbers by value (written without a needless ".0"), else text in sorted order."""
    if names and all(_is_number(n) for n in names):
        return [number_name(v) for v in sorted({float(n) for n in names})]
    return sorted(set(names))


__all__ = ["FLOAT32_MAX", "Frame", "MISSING", "TableError", "class_order", "number_name", "read_frame"]
