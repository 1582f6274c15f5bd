"""Writing result files safely: the one home of atomic writes, strict JSON and CSV cells.

- **Atomic**: every JSON, bank, export, report and table selfsup writes goes to a temporary file in
  the target's folder, is flushed to disk (fsync) and moved over the target with ``os.replace``
  (atomic on POSIX), then the folder is synced: a kill at any moment leaves the old file or the new
  one, never a torn one, and no temporary file is left behind by an error. ``atomic_path`` hands
  the temporary path to writers that want a path (safetensors, ONNX, ``np.savez``); it keeps the
  target's suffix, which some of them insist on.
- **Strict JSON**: ``write_json`` never writes ``NaN`` / ``Infinity`` (not JSON; many readers
  refuse them): a non-finite number becomes ``null`` and the object holding it says why under
  ``"non_finite"`` (``{"final_loss": "nan"}``).
- **CSV cells**: ``safe_cell`` neutralises spreadsheet formulas (OWASP's CSV-injection rule): a
  text cell starting with ``= + - @``, a tab or a carriage return gets a leading ``'`` so that
  Excel, LibreOffice and Sheets show it as text instead of running it. Numbers are left as they are.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp's are 0600)


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (``.NAME.XXXX.tmp``; ``.NAME.XXXX.tmp.SUFFIX``
    with ``keep_suffix``, for writers that insist on one); on success it replaces ``path``
    atomically, on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                                dir=path.parent)
    os.fchmod(fd, _MODE)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` written atomically (``mode`` "w" or "wb"; ``kwargs`` as for ``open``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None; a dict holding one (directly or in a
    list) gains ``"non_finite": {key: "nan" | "inf" | "-inf" | "in list"}``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out, why = {}, {}
        for k, v in obj.items():
            if isinstance(v, float) and not math.isfinite(v):
                why[str(k)] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            elif isinstance(v, list | tuple) and any(isinstance(x, float) and not math.isfinite(x) for x in v):
                why[str(k)] = "in list"
            out[k] = finite_json(v)
        if why:
            out["non_finite"] = why
        return out
    if isinstance(obj, list | tuple):
        return [finite_json(x) for x in obj]
    return obj


def json_text(obj: Any, indent: int | None = 1) -> str:
    """Strict JSON text of ``obj`` (``finite_json``), ending with a newline."""
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """``obj`` as strict JSON (non-finite numbers as null, with the reason), written atomically."""
    return write_text(path, json_text(obj, indent))


def safe_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs: text starting with ``= + - @``, tab or CR gets a leading
    ``'``; numbers (also as text, "-1.5e3") and everything else pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_csv(path: str | Path, header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> Path:
    """A CSV with every text cell neutralised (``safe_cell``), written atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([safe_cell(c) for c in header])
        for row in rows:
            w.writerow([safe_cell(c) for c in row])
    return Path(path)


__all__ = ["FORMULA_START", "atomic_open", "atomic_path", "finite_json", "json_text", "safe_cell", "write_bytes",
           "write_csv", "write_json", "write_text"]
