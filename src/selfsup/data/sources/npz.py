""".npz members from their headers: shape, dtype and size, read before any array is loaded.

An ``.npz`` is a zip of ``.npy`` files. A compressed member is inflated whole by ``np.load``
(10.9 MB on disk declaring 2.5 GB loaded in full; a header declaring 931 GiB ended in
``_ArrayMemoryError``). ``check_npz`` reads each member's zip header and ``.npy`` header (a few
hundred bytes inflated) and refuses, in one line:

- a member whose ``.npy`` header declares more bytes than the zip says the member holds (a lying
  header: numpy would allocate the declared size before finding the data short);
- compressed members that would inflate past ``MAX_NPZ_INFLATE`` together (stored members are
  memory-mapped, not read: their size is not capped).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data.sources.base import SourceError

MAX_NPZ_INFLATE = 1 << 30  # compressed members read into memory, all together


@dataclass(frozen=True)
class NpzMember:
    """One array of an .npz as its headers declare it."""

    name: str  # without ".npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    compressed: bool
    zip_bytes: int  # the member's uncompressed size from the zip header (.npy header included)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} B"


def npz_members(path: str | Path) -> dict[str, NpzMember]:
    """Every ``.npy`` member of ``path`` from its headers; raises SourceError for a file that is not one."""
    path = Path(path)
    members: dict[str, NpzMember] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                        version, np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                members[info.filename[:-4]] = NpzMember(
                    info.filename[:-4], tuple(int(n) for n in shape), np.dtype(dtype),
                    info.compress_type != zipfile.ZIP_STORED, int(info.file_size))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        raise SourceError(f"{path}: not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    return members


def check_npz(path: str | Path) -> dict[str, NpzMember]:
    """``npz_members`` after the checks of the module docstring; raises SourceError in one line."""
    members = npz_members(path)
    inflate = 0
    for m in members.values():
        if m.nbytes > m.zip_bytes:
            raise SourceError(f"{path}: array {m.name!r} declares {m.shape} {m.dtype} = {_size(m.nbytes)} "
                              f"but the file holds {_size(m.zip_bytes)} for it (a damaged or forged header)")
        if m.compressed:
            inflate += m.zip_bytes
    if inflate > MAX_NPZ_INFLATE:
        big = max((m for m in members.values() if m.compressed), key=lambda m: m.zip_bytes)
        raise SourceError(f"{path}: compressed arrays inflate to {_size(inflate)} (array {big.name!r}: {big.shape} "
                          f"{big.dtype}), over the {_size(MAX_NPZ_INFLATE)} read into memory; save them with "
                          "np.savez (not savez_compressed) to have them memory-mapped")
    return members


__all__ = ["MAX_NPZ_INFLATE", "NpzMember", "check_npz", "npz_members"]
