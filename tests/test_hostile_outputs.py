"""Hostile input, round 2 (issue 23): wide tables, CSV formulas in outputs, atomic writes, strict
JSON, bounded metadata. Each test builds the attack itself, small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfsup.data.sources import frame as frame_mod
from selfsup.data.sources.frame import TableError, read_frame

RNG = np.random.default_rng(23)


# --- wide CSV (item 14) --------------------------------------------------------------------------


def test_wide_csv_header_is_parsed_whole_not_from_the_first_64_kib(tmp_path: Path):
    """20,000 unique column names (about 110 KiB of header): was refused as "repeated column names"."""
    names = [f"c{j}" for j in range(20_000)]  # cut at 64 KiB, the last name read ("c1...") repeats
    rows = [",".join(names)] + [",".join(str(v) for v in RNG.integers(0, 9, 20_000)) for _ in range(3)]
    (tmp_path / "wide.csv").write_text("\n".join(rows) + "\n")
    frame = read_frame(tmp_path / "wide.csv")
    assert list(frame.data.columns) == names and len(frame.data) == 3


def test_table_head_is_read_in_bounded_pieces(tmp_path: Path, monkeypatch):
    """The sniffer reads 64 KiB of a long table, not the file; a header with no line break within
    MAX_HEADER_BYTES is refused in one line."""
    path = tmp_path / "long.csv"
    path.write_text("a,b\n" + "1,2\n" * 300_000)  # 1.2 MB
    assert len(frame_mod._head(path)) == 1 << 16
    monkeypatch.setattr(frame_mod, "MAX_HEADER_BYTES", 1 << 20)
    (tmp_path / "endless.csv").write_bytes(b"a," * (1 << 20))
    with pytest.raises(TableError, match="no line break in the first 1 MiB"):
        read_frame(tmp_path / "endless.csv")
