"""Time-series readers (data/series.py), the "series" sample contract and its dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data import collate, open_source
from selfsup.data.sources.series import (
    SeriesError,
    SeriesSource,
    read_arff,
    read_series_npz,
    read_ts,
    read_ucr_tsv,
)
from selfsup.data.sources.structured import data_kind
from selfsup.data.sources.windows import WindowSource, read_long_series
from selfsup.data.spec import InputSpec

RAGGED_TS = """# a comment
@problemName Ragged
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
1,2,3,4:5,6,7,8:a
1,2:3,4,5:b
1,?,3:4,5,6:a
1,2,3:b
1,x,3:4,5,6:a
1,2,3:4,5,6:c
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_ragged_ts_file(tmp_path: Path):
    d = read_ts(write(tmp_path, "ragged.ts", RAGGED_TS))
    assert d.class_names == ["a", "b"] and d.labels.tolist() == [0, 1, 0]
    assert d.values.shape == (3, 2, 4) and d.lengths.tolist() == [4, 3, 3]
    assert d.skips.by_reason == {"wrong dimensions": 1, "bad value": 1, "unknown label": 1}
    # second series: dimension 0 is 2 long, dimension 1 is 3 long: NaN pads both to 3, then to 4
    np.testing.assert_array_equal(d.values[1], [[1, 2, np.nan, np.nan], [3, 4, 5, np.nan]])
    assert np.isnan(d.values[2, 0, 1])  # "?" = missing
    assert "unequal lengths" in d.summary()


def test_ucr_tsv_label_first_with_nan_padding(tmp_path: Path):
    p = write(tmp_path, "Toy_TRAIN.tsv", "2\t0.1\t0.2\t0.3\n1\t0.5\t0.6\tNaN\n-1\t1\t2\t3\n2\toops\t1\t1\n")
    assert data_kind(p) == "series"
    d = read_ucr_tsv(p)
    assert d.class_names == ["-1", "1", "2"] and d.labels.tolist() == [2, 1, 0]
    assert d.lengths.tolist() == [3, 2, 3] and d.skips.by_reason == {"bad value": 1}


def test_arff_univariate_and_relational(tmp_path: Path):
    uni = write(tmp_path, "u.arff", "@relation u\n@attribute t1 numeric\n@attribute t2 numeric\n"
                "@attribute target {x,y}\n@data\n1,2,x\n3,?,y\n")
    d = read_arff(uni)
    assert d.values.shape == (2, 1, 2) and d.labels.tolist() == [0, 1] and np.isnan(d.values[1, 0, 1])
    multi = write(tmp_path, "m.arff", "@relation m\n@attribute rel relational\n@attribute t1 numeric\n"
                  "@attribute t2 numeric\n@end rel\n@attribute activity {Run,Walk}\n@data\n"
                  "'1,2,3\\n4,5,6',Walk\n'7,8\\n9,10',Run\n")
    d = read_arff(multi)
    assert d.values.shape == (2, 2, 3) and d.labels.tolist() == [1, 0] and d.lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(d.values[0], [[1, 2, 3], [4, 5, 6]])


def test_npz_series_and_collate_pads_with_nan(tmp_path: Path):
    x = np.random.default_rng(0).normal(size=(5, 2, 16)).astype(np.float32)
    np.savez(tmp_path / "s.npz", series=x, y=np.array([3, 1, 3, 1, 1]), lengths=np.array([16, 8, 16, 12, 16]))
    src = open_source(str(tmp_path / "s.npz"))
    assert isinstance(src, SeriesSource) and src.spec.modality == "series"
    assert src.spec.channels == 2 and src.spec.series_length == 16 and src.spec.class_names == ["1", "3"]
    assert src.get(1)["series"].shape == (2, 8)
    batch = next(iter(src.loader(3)))
    assert batch["series"].shape == (3, 2, 16) and batch["series_length"].tolist() == [16, 8, 16]
    assert torch.isnan(batch["series"][1, :, 8:]).all() and not torch.isnan(batch["series"][0]).any()
    torch.testing.assert_close(batch["series"][1, :, :8], torch.from_numpy(x[1, :, :8]))
    empty = collate([None], InputSpec(modality="series", channels=2, series_length=16))
    assert empty["series"].shape == (0, 2, 16) and "series_length" not in empty  # lengths only when they vary
    assert read_series_npz(tmp_path / "s.npz").labels.tolist() == [1, 0, 1, 0, 0]


def test_long_csv_windows_standardised_with_training_rows(tmp_path: Path):
    rows = ["date,load,temp,note"]
    for t in range(40):
        load = "bad" if t == 5 else f"{t}"
        rows.append(f"2020-01-01 {t // 4:02d}:{15 * (t % 4):02d}:00,{load},{2 * t + 1},n{t}")
    p = write(tmp_path, "long.csv", "\n".join(rows) + "\n")
    assert data_kind(p) == "windows"
    s = read_long_series(p)
    assert s.channels == ["load", "temp"] and s.values.shape == (2, 40) and np.isnan(s.values[0, 5])
    assert s.timestamps[1] - s.timestamps[0] == np.timedelta64(15, "m") and "1 text cells" in s.summary()
    src = WindowSource(s, window=8, stride=4, start=0, end=40, fit_rows=(0, 20))
    assert src.starts.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32] and src.labels.tolist() == [-1] * 9
    train = np.delete(np.arange(20.0), 5)
    assert src.mean[0] == pytest.approx(train.mean()) and src.std[0] == pytest.approx(train.std())
    w = src.get(2)["series"]
    assert w.shape == (2, 8) and w[0, 0].item() == pytest.approx((8 - train.mean()) / train.std(), rel=1e-5)
    again = open_source(str(p), schema=src.spec.schema, start=20)  # test rows with the training statistics
    assert isinstance(again, WindowSource) and again.mean[0] == src.mean[0] and again.starts[0] == 20
    assert again.window == 8 and again.stride == 4


def test_anomaly_labels_from_nab_windows_and_ucr_names(tmp_path: Path):
    folder = tmp_path / "nab" / "data" / "group"
    folder.mkdir(parents=True)
    lines = ["timestamp,value"] + [f"2014-01-01 {h:02d}:00:00,{h}" for h in range(24)]
    write(folder, "s.csv", "\n".join(lines) + "\n")
    (tmp_path / "nab" / "combined_windows.json").write_text(json.dumps(
        {"group/s.csv": [["2014-01-01 10:00:00.000000", "2014-01-01 12:00:00.000000"]]}))
    src = open_source(str(folder / "s.csv"), window=4, stride=4, split="all")
    assert src.series.point_labels.tolist() == [0] * 10 + [1] * 3 + [0] * 11
    assert src.labels.tolist() == [0, 0, 1, 1, 0, 0] and src.spec.class_names == ["normal", "anomaly"]
    ucr = tmp_path / "001_UCR_Anomaly_Toy_10_14_17.txt"
    ucr.write_text("\n".join(str(float(v)) for v in range(30)) + "\n")
    s = read_long_series(ucr)
    assert s.train_end == 10 and np.flatnonzero(s.point_labels).tolist() == [14, 15, 16]
    train = open_source(str(ucr), window=4, stride=2)  # a long series is read for its training part
    assert train.starts.tolist() == [0, 2, 4, 6] and (train.labels == 0).all()
    test = open_source(str(ucr), window=4, stride=2, split="test", schema=train.spec.schema)
    assert test.starts[0] == 10 and test.mean[0] == train.mean[0] and test.labels.max() == 1
    nab = open_source(str(folder / "s.csv"), window=2, stride=1)  # NAB: the 15 % probationary period
    assert nab.end == 3 and nab.series.train_end == 3


def test_unreadable_series_files_are_refused_in_one_line(tmp_path: Path):
    for name, text, why in [("a.ts", "@problemName x\n", "no @data"), ("b.ts", "@data\n", "no usable series"),
                            ("c.txt", "1\nx y\n", "not a file of numbers")]:
        with pytest.raises(SeriesError, match=why) as err:
            (read_long_series if name.endswith(".txt") else read_ts)(write(tmp_path, name, text))
        assert "\n" not in str(err.value)
    with pytest.raises(SeriesError, match="shorter than one window"):
        WindowSource(read_long_series(write(tmp_path, "short.txt", "1\n2\n3\n")), window=8)


# --- real data (../shared/data) ------------------------------------------------------------------

UCR = {  # name: (train, test, channels, length, classes)
    "ECG200": (100, 100, 1, 96, 2), "PhalangesOutlinesCorrect": (1800, 858, 1, 80, 2),
    "RefrigerationDevices": (375, 375, 1, 720, 3), "GunPoint": (50, 150, 1, 150, 2),
    "UWaveGestureLibrary": (120, 320, 3, 315, 8),
}


@pytest.mark.parametrize("name", sorted(UCR))
def test_ucr_sets(shared_data: Path, name: str):
    folder = shared_data / "timeseries/ucr" / name
    files = {p.stem.rsplit("_", 1)[1]: p for p in folder.iterdir()}
    train, test = open_source(str(files["TRAIN"])), open_source(str(files["TEST"]))
    n_train, n_test, c, t, k = UCR[name]
    assert (len(train), len(test)) == (n_train, n_test)
    assert (train.spec.channels, train.spec.series_length, train.spec.num_classes) == (c, t, k)
    assert train.spec.class_names == test.spec.class_names and train.data.equal_length


def test_ett_and_nab(shared_data: Path):
    ett = read_long_series(shared_data / "timeseries/forecasting/ETTh1.csv")
    assert ett.values.shape == (7, 17420) and ett.channels[-1] == "OT" and not np.isnan(ett.values).any()
    weather = read_long_series(shared_data / "timeseries/forecasting/weather.csv")
    assert weather.values.shape == (21, 52696)
    nab = read_long_series(shared_data / "nab/data/realKnownCause/nyc_taxi.csv")
    assert nab.point_labels is not None and nab.point_labels.sum() > 0
