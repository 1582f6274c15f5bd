"""Damaged table and series files: opening and reading them gives a one-line SourceError or data,
never another exception (issue 13: "never a crash")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfsup.data import open_source
from selfsup.data.sources import SourceError

SEEDS = {
    "t.csv": b"id,V1,Amount,kind,Class\na,0.5,10,x,0\nb,NaN,11,y,1\nc,0.7,ten,x,0\nd,,12,,1\n",
    "T_TRAIN.tsv": b"1\t0.1\t0.2\t0.3\n2\t0.5\t0.6\tNaN\n1\t1\t2\t3\n",
    "r.ts": (b"@problemName x\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n"
             b"1,2,3:4,5,6:a\n1,2:3,4,5:b\n"),
    "u.arff": (b"@relation u\n@attribute t1 numeric\n@attribute t2 numeric\n@attribute target {x,y}\n"
               b"@data\n1,2,x\n3,?,y\n"),
    "l.csv": b"date,load\n" + b"".join(b"2020-01-02 %02d:00:00,%d\n" % (h, h) for h in range(24)),
    "s.txt": b"\n".join(str(float(i)).encode() for i in range(40)),
}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        i = int(rng.integers(0, len(b))) if b else 0
        op = int(rng.integers(0, 4))
        if op == 0 and b:
            b[i] = int(rng.integers(0, 256))
        elif op == 1:
            b[i:i] = bytes(rng.choice(list(b",:\n\t\"'?@xX-e."), size=int(rng.integers(1, 4))))
        elif op == 2 and b:
            del b[i : i + int(rng.integers(1, 10))]
        else:
            b = b[:i]
    return bytes(b)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_damaged_files_give_data_or_a_one_line_error(tmp_path: Path, name: str):
    rng = np.random.default_rng(0)
    opts = {"window": 4, "stride": 2} if name in ("l.csv", "s.txt") else {}
    for _ in range(40):
        p = tmp_path / name
        p.write_bytes(mutate(SEEDS[name], rng))
        try:
            src = open_source(str(p), **opts)
            next(iter(src.loader(4)))
        except SourceError as e:
            assert "\n" not in str(e)
