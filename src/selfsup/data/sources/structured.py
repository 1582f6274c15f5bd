"""Which `--data` files are tables or time series, and opening them (``open_source`` asks here first).

``data_kind(path)`` decides from the file alone:

- ``.ts``, ``.arff`` -> "series" (a set of series); a ``.tsv`` / ``.txt`` whose first line is all
  numbers and has a UCR name (``*_TRAIN`` / ``*_TEST``) or no header -> "series" (UCR label-first);
- ``.txt`` of one number per line (or a UCR anomaly file) -> "windows" (one long series);
- ``.csv`` / ``.tsv`` / ``.parquet`` / ``.pq`` / UCI ``.data`` / ``.test`` (with a ``.names``
  beside it) -> "windows" when a column named date / time / timestamp holds dates (ETT,
  weather, NAB), else "table";
- ``.npz`` -> "table" for a 2-D ``X`` (ADBench), "series" for ``series`` or a 3-D ``X`` / ``x``
  shaped (N, C, T) with T >= 2 C; anything else (images) is left to the image reader;
- anything else: None (not a table or series file).

``kind=`` overrides it (e.g. ``kind="table"`` reads ETTh1.csv row by row). The readers' modules,
and pandas, are imported only for files that are tables or series.
"""

from __future__ import annotations

from pathlib import Path

from selfsup.data.sources.base import Source, SourceError
from selfsup.data.sources.npz import npz_members

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".data")
KINDS = ("table", "series", "windows")
KIND_NAMES = {"table": "a table", "series": "a set of series", "windows": "a long series"}
OPTIONS = {  # what each reader takes (besides schema)
    "table": {"target", "columns", "drop", "bad", "sep", "header", "fit_rows", "split"},
    "series": {"split", "bad"},
    "windows": {"window", "stride", "start", "end", "fit_rows", "time_column", "columns", "drop", "split", "bad"},
}
# a long series is read for its training part unless told otherwise: in one series the future is the test
DEFAULT_SPLIT = {"table": "all", "series": "all", "windows": "train"}


def _npz_kind(path: Path) -> str | None:
    try:
        members = npz_members(path)  # shapes from the headers: nothing is inflated to look
    except SourceError:
        return None
    if "series" in members:
        return "series"
    for k in ("X", "x", "features"):
        if k in members:
            shape = members[k].shape
            if len(shape) == 2:
                return "table"
            if len(shape) == 3 and k != "features" and shape[2] >= 2 * shape[1]:
                return "series"
    return None


def _first_line(path: Path) -> list[str]:
    with open(path, "rb") as f:
        while raw := f.readline(1 << 24):  # bounded: a file without line breaks is not read whole
            line = raw.decode("latin-1").strip()
            if line and not line.startswith(("#", "|", "@", "%")):
                return [c for c in line.replace(",", "\t").replace(" ", "\t").split("\t") if c]
    return []


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return bool(cells)


def data_kind(path: str | Path) -> str | None:
    """"table", "series", "windows" or None for a path (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix in (".ts", ".arff"):
        return "series"
    if suffix == ".npz":
        return _npz_kind(path)
    if suffix in (".tsv", ".txt"):
        cells = _first_line(path)
        if suffix == ".txt" and len(cells) <= 16 and _all_numbers(cells):
            return "windows"
        if _all_numbers(cells) and len(cells) > 2:
            return "series"
    if suffix in (*TABLE_SUFFIXES, ".tsv") or path.with_suffix(".names").is_file():
        if suffix in (".parquet", ".pq"):
            return "table"
        from selfsup.data.sources.frame import read_frame
        from selfsup.data.sources.windows import _time_column

        try:
            head = read_frame(path, nrows=200).data
        except SourceError:
            return "table"  # the table reader gives the one-line reason
        return "windows" if _time_column(head, None) is not None else "table"
    return None


def open_structured(spec: str, *, kind: str | None = None, schema: dict | None = None, **options) -> Source | None:
    """A table or series source for ``spec``, or None when it is neither (then images are tried).

    ``options`` go to the reader (None values are left out): tables ``target``, ``columns``,
    ``drop``, ``bad``, ``sep``, ``header``, ``split``; sets of series ``split``; long series
    ``window``, ``stride``, ``start``, ``end``, ``fit_rows``, ``time_column``, ``columns``, ``drop``,
    ``split`` ("train" by default, unless ``start`` / ``end`` are given: the rows before
``windows.training_end``). ``schema`` (a run's
    ``spec.schema``) reads test data the training way, with its window and stride.
    """
    options = {k: v for k, v in options.items() if v is not None}
    path = Path(str(spec)).expanduser()
    if kind is not None and kind not in KINDS:
        raise SourceError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    kind = kind or (schema or {}).get("kind") or data_kind(path)
    if kind is None:
        if options or schema:
            raise SourceError(f"{spec}: options {', '.join(options) or 'schema'} apply to tables and series only")
        return None
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    allowed = OPTIONS[kind]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(f"{path}: read as {KIND_NAMES[kind]}, which takes no option {', '.join(unknown)}"
                          + (f" (it takes {', '.join(sorted(allowed))})" if allowed else "")
                          + "; kind= chooses how to read a file")
    explicit_rows = "start" in options or "end" in options  # rows given: no default part
    options.setdefault("split", "all" if explicit_rows else DEFAULT_SPLIT[kind])
    if kind == "table":
        from selfsup.data.sources.table import open_table

        return open_table(path, schema=schema, **options)
    if kind == "series":
        from selfsup.data.sources.series import SeriesSource, read_series

        return SeriesSource(read_series(path, **options))
    from selfsup.data.sources.windows import WindowSource, read_long_series

    read_opts = {k: options.pop(k) for k in ("time_column", "columns", "drop", "bad") if k in options}
    if schema is not None:
        options.setdefault("window", schema.get("window"))
        options.setdefault("stride", schema.get("stride"))
    return WindowSource(read_long_series(path, **read_opts), schema=schema, **options)


__all__ = ["DEFAULT_SPLIT", "KINDS", "data_kind", "open_structured"]
