"""Run folders written before the one-trunk refactor (issue 19) still load, embed, evaluate and export.

tests/data/old_runs holds tiny MAE runs (image, table, series) written by main at 0d00ee4 and the
features their encoders gave then on fixed inputs (``make_reference.py``); the same folders must give
the same features today and go through ``embed``, ``evaluate`` (kNN) and ``export``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from selfsup import api
from selfsup.runs import load_method

OLD = Path(__file__).parent / "data" / "old_runs"
KINDS = ("image", "table", "series")


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_reference", OLD / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("kind", KINDS)
def test_old_run_gives_the_same_features(kind):
    ref = _reference_module()
    want = np.load(OLD / "reference.npz")[f"{kind}_features"]
    got = ref.features(kind, ref.inputs()[kind])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["image", "table"])
def test_old_run_method_loads(kind):
    method = load_method(OLD / f"{kind}_mae")
    assert any(k.startswith("encoder.") for k in method.state_dict())


def test_old_table_run_reconstructs_as_it_did():
    """The table MAE's column heads moved under ``decoder_pred`` (a key map on load): same errors as before."""
    ref = _reference_module()
    want = np.load(OLD / "reference.npz")["table_errors"]
    got = ref.table_errors(ref.inputs()["table"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.isfinite(got).any()


def test_old_series_run_method_says_why_it_cannot_reconstruct():
    """The series MAE before issue 19 had a linear head and no decoder: nothing to map it to."""
    with pytest.raises(ValueError, match="predates the MAE decoder"):
        load_method(OLD / "series_mae")


def _data(kind: str, shared: Path) -> str:
    return {"image": "digits:test", "table": str(shared / "tabular" / "adbench" / "12_fault.npz"),
            "series": str(shared / "timeseries" / "ucr" / "ECG200" / "ECG200_TEST.tsv")}[kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_old_run_embeds_evaluates_and_exports(kind, shared_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD / f"{kind}_mae", run)
    data = _data(kind, shared_data)
    out = api.embed(run, data, tmp_path / "f.npz", max_samples=60)
    feats = np.load(out)["features"]
    assert feats.shape[0] == 60 and np.isfinite(feats).all()
    records = api.evaluate(run, data, protocols=["knn"], baselines=[], shots=[5], seeds=1, max_samples=200,
                           log=lambda *_: None)
    knn = [r for r in records if r.get("protocol") == "knn" and r.get("encoder") == "ssl"]
    assert knn and all(0.0 <= r["mean"] <= 1.0 for r in knn)
    path = api.export(run, "safetensors", tmp_path / "enc.safetensors", log=lambda *_: None)
    assert path.exists() and path.stat().st_size > 1000
