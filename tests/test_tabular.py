"""Table readers (data/sources/table.py), the "table" sample contract and its dispatch from open_source."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from selfsup.data import collate, open_source
from selfsup.data.sources.table import TableError, TableSource, read_frame, read_table
from selfsup.data.spec import InputSpec

MALFORMED = (
    "id,V1,Amount,kind,Class\n"
    "a,0.5,10,x,0\n"
    "b,NaN,11,y,1\n"      # NaN: missing
    "c,0.7,ten,x,0\n"     # text in a numeric column
    "d,,12,,1\n"          # missing numeric and category
    "e,inf,13,y,0\n"      # not finite
    "f,0.9,14,x,maybe\n"  # a text label among numbers
    "g,1.0,15\n"          # short row: the missing cells are missing, the label too
    "h,1.1,16,y,1,extra\n"  # one cell too many
    "i,1.3,17,x,1\n"
)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_malformed_csv_is_read_with_every_problem_counted(tmp_path: Path):
    t = read_table(write(tmp_path, "t.csv", MALFORMED), target="Class")
    s = t.schema
    assert s.numeric == ["V1", "Amount"] and s.categorical == ["kind"] and s.dropped.keys() == {"id"}
    assert s.class_names == ["0", "1"] and t.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert t.skips.by_reason == {"wrong length": 1, "bad label": 1, "missing label": 1}
    assert t.imputed == {"text in Amount": 1, "not finite in V1": 1}
    assert [k.split("/")[1] for k in t.keys] == ["0", "1", "2", "3", "4", "7"]
    # standardised with the statistics of the observed values of all rows read (the training data)
    v1 = np.array([0.5, 0.7, 0.9, 1.0, 1.3])  # NaN, "" and inf are not observations
    assert math.isclose(s.mean[0], v1.mean(), rel_tol=1e-9) and math.isclose(s.std[0], v1.std(), rel_tol=1e-9)
    x = t.features
    assert np.isnan(x[[1, 3, 4], 0]).all() and np.isnan(x[2, 1])  # NaN, missing, inf -> NaN; "ten" -> NaN
    assert math.isclose(float(x[0, 0]), (0.5 - v1.mean()) / v1.std(), rel_tol=1e-5)
    assert s.vocab == {"kind": ["x", "y"]} and t.categories[:, 0].tolist() == [1, 2, 1, 0, 2, 1]


def test_bad_cells_can_skip_rows_instead(tmp_path: Path):
    t = read_table(write(tmp_path, "t.csv", MALFORMED), target="Class", bad="skip")
    assert t.skips.by_reason["text in Amount"] == 1 and t.skips.by_reason["not finite in V1"] == 1
    assert len(t) == 4 and not t.imputed


def test_schema_from_training_data_reads_test_data_the_same_way(tmp_path: Path):
    train = read_table(write(tmp_path, "train.csv", "x,c,label\n1,a,no\n3,b,yes\n5,a,no\n7,b,yes\n"))
    assert train.schema.target == "label" and train.schema.class_names == ["no", "yes"]  # found by name
    d = json.loads(json.dumps(train.schema.to_dict()))  # travels as JSON in a run's input spec
    test = read_table(write(tmp_path, "test.csv", "x,c,label\n4,a,yes\n100,z,no\n2,b,maybe\n"), schema=d)
    assert test.features[:, 0].tolist() == pytest.approx([0.0, (100 - 4) / math.sqrt(5)])  # train mean 4, std
    assert test.categories[:, 0].tolist() == [1, 0]  # unseen "z" -> 0
    assert test.imputed == {"unseen category in c": 1} and test.skips.by_reason == {"unknown label": 1}
    with pytest.raises(TableError, match="no column 'c' that the training table had"):
        read_table(write(tmp_path, "other.csv", "x,label\n1,no\n"), schema=d)


def test_statistics_from_the_training_rows_of_one_file(tmp_path: Path):
    np.savez(tmp_path / "ad.npz", X=np.array([[0.0], [2.0], [100.0], [4.0]]), y=np.array([0, 0, 1, 0]))
    t = read_table(tmp_path / "ad.npz", fit_rows=[0, 1])  # rows 2 and 3 are the held-out part
    assert t.schema.mean == [1.0] and t.schema.std == [1.0] and len(t) == 4
    assert t.features[:, 0].tolist() == [-1.0, 1.0, 99.0, 3.0]


def test_uci_files_names_comment_line_and_label_periods(tmp_path: Path):
    write(tmp_path, "toy.names", "1. Title: toy\n\nage: continuous.\ncolour: red, blue.\nclass: >5, <=5\n")
    write(tmp_path, "toy.data", "39, red, >5\n50, blue, <=5\n38, ?, <=5\n41, red, >5\n")
    write(tmp_path, "toy.test", "|1x3 Cross validator\n25, blue, <=5.\n38, red, >5.\n")
    train = read_table(tmp_path / "toy.data")
    assert train.schema.numeric == ["age"] and train.schema.categorical == ["colour"]
    assert train.schema.class_names == ["<=5", ">5"] and train.categories[:, 0].tolist() == [2, 1, 0, 2]
    test = read_table(tmp_path / "toy.test", schema=train.schema)
    assert test.labels.tolist() == [0, 1] and len(test) == 2


def test_other_encodings_separators_parquet_and_npz(tmp_path: Path):
    latin = write(tmp_path, "w.csv", "date;T (\xb0C);SWDR (W/m\xb2)\n2020-01-01;1,5;3\n".encode("latin-1"))
    f = read_frame(latin)
    assert list(f.data.columns) == ["date", "T (°C)", "SWDR (W/m²)"] and f.notes == ["not UTF-8: read as Latin-1"]
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": ["u", "v", "u", None], "y": [0, 1, 0, 1]})
    df.to_parquet(tmp_path / "t.parquet")
    t = read_table(tmp_path / "t.parquet", target="y")
    assert t.schema.numeric == ["a"] and t.schema.categorical == ["b"] and t.categories[:, 0].tolist() == [1, 2, 1, 0]
    np.savez(tmp_path / "ad.npz", X=np.arange(12.0).reshape(6, 2), y=np.array([0, 0, 0, 0, 0, 1]))
    t = read_table(tmp_path / "ad.npz")
    assert t.features.shape == (6, 2) and t.labels.tolist() == [0, 0, 0, 0, 0, 1] and t.schema.target == "y"


@pytest.mark.parametrize("name,data,why", [
    ("binary.csv", b"\x00\xff\xfe" * 50, "binary"),
    ("empty.csv", b"", "no rows"),
    ("header.csv", b"a,b\n", "no usable"),
    ("text.csv", b"name,city\nann,rome\nbob,oslo\n", "no usable feature columns"),
    ("dup.csv", b"a,a\n1,2\n", "repeated column names"),
])
def test_unusable_files_are_refused_in_one_line(tmp_path: Path, name: str, data: bytes, why: str):
    with pytest.raises(TableError, match=why) as err:
        read_table(write(tmp_path, name, data))
    assert "\n" not in str(err.value)


def test_unknown_column_names_are_refused_with_the_columns(tmp_path: Path):
    p = write(tmp_path, "ok.csv", "x,y\n1,2\n3,4\n")
    with pytest.raises(TableError, match="no column 'label'; columns: x, y"):
        read_table(p, target="label")
    t = read_table(p, target="", drop=["y"])
    assert t.schema.numeric == ["x"] and t.labels.tolist() == [-1, -1]


def test_table_source_samples_and_batches(tmp_path: Path):
    src = open_source(str(write(tmp_path, "t.csv", MALFORMED)), target="Class", drop=["kind"])
    assert isinstance(src, TableSource) and src.spec.modality == "table"
    assert src.spec.num_features == 2 and src.spec.cardinalities == [] and src.spec.num_classes == 2
    s = src.get(0)
    assert s["features"].dtype == torch.float32 and s["features"].shape == (2,)
    assert s["categories"].dtype == torch.int64 and s["categories"].shape == (0,)
    batch = next(iter(src.loader(4)))
    assert batch["features"].shape == (4, 2) and batch["categories"].shape == (4, 0)
    assert batch["label"].tolist() == [0, 1, 0, 1] and len(batch["key"]) == 4
    empty = collate([{"__skip__": "k: broken"}], InputSpec(modality="table", num_features=3, cardinalities=[4, 2]))
    assert empty["features"].shape == (0, 3) and empty["categories"].shape == (0, 2) and empty["skipped"]
    assert "image" not in empty


def test_image_npz_still_goes_to_the_image_reader(tmp_path: Path):
    np.savez(tmp_path / "img.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4))
    src = open_source(str(tmp_path / "img.npz"))
    assert src.spec.modality == "image" and src.get(0)["image"].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="apply to tables and series only"):
        open_source(str(tmp_path / "img.npz"), target="y")


# --- real data (../shared/data) ------------------------------------------------------------------


def test_adult_original_files(shared_data: Path):
    train = read_table(shared_data / "tabular/adult/adult.data")
    test = read_table(shared_data / "tabular/adult/adult.test", schema=train.schema)
    s = train.schema
    assert (len(train), len(test)) == (32561, 16281) and s.class_names == ["<=50K", ">50K"]
    assert s.numeric == ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    assert len(s.categorical) == 8 and s.cardinalities[s.categorical.index("sex")] == 3
    assert int((train.categories == 0).any(axis=1).sum()) == 32561 - 30162  # "?" rows, as adult.names says
    assert np.bincount(test.labels).tolist() == [12435, 3846]


def test_adbench_and_creditcard(shared_data: Path):
    src = open_source(str(shared_data / "tabular/adbench/44_Wilt.npz"))
    assert isinstance(src, TableSource) and len(src) == 4819 and src.spec.num_features == 5
    assert int(src.table.labels.sum()) == 257
    cc = read_table(shared_data / "creditcard/creditcard_sample.csv", target="Class")
    assert len(cc) == 5412 and int(cc.labels.sum()) == 492 and len(cc.schema.numeric) == 30


def test_datasets_help_lists_tables_and_series():
    from selfsup.data import describe_sources

    text = describe_sources()
    assert "table" in text and "--target" in text and "time series" in text and "long series" in text


def test_a_wide_table_gets_a_batch_its_attention_fits(tmp_path: Path):
    """One token per column: 256 rows of a 1,555-column table did not fit in 24 GB (ADBench's
    17_InternetAds), so the default batch shrinks with the square of the width; a batch the user
    sets is kept."""
    import yaml

    import selfsup.api as ss
    from selfsup.encoders.sizing import TABLE_TOKEN_PAIRS, table_batch_size

    assert table_batch_size(11, 256) == 256 and table_batch_size(1556, 256) == 8
    assert table_batch_size(201, 256) == TABLE_TOKEN_PAIRS // 201**2 < 256
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "wide.npz", X=rng.normal(size=(40, 200)).astype(np.float32), y=np.arange(40) % 2)
    small = ["encoder.size=custom", "encoder.width=16", "encoder.depth=1", "encoder.heads=2",
             "method.decoder_width=16", "method.decoder_depth=1", "method.decoder_heads=2", "data.num_workers=0"]
    said = []
    for name, extra in (("auto", []), ("set", ["train.batch_size=16"])):
        ss.pretrain(str(tmp_path / "wide.npz"), "mae", steps=1, out=tmp_path / name, overrides=small + extra,
                    progress=False, log=said.append)
    batch = {n: yaml.safe_load((tmp_path / n / "config.yaml").read_text())["train"]["batch_size"]
             for n in ("auto", "set")}
    assert batch == {"auto": table_batch_size(201, 256), "set": 16}
    assert any(s.startswith(f"batch size {batch['auto']} (not 256): 201 tokens") for s in said)
