"""Every objective on every data type (issue 19): the data types' views, and `selfsup pretrain
--method {mae,simclr,dino}` on images, tables, series and audio through the CLI (small networks),
with an audio-only MAE run evaluated by kNN."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.modalities import REGISTRY, cat_inputs, data_type

TINY = ["encoder.depth=1", "encoder.width=32", "encoder.heads=2", "train.batch_size=16"]
DATA = {
    "image": "digits:train",
    "table": "tabular/adbench/12_fault.npz",
    "series": "timeseries/ucr/ECG200/ECG200_TRAIN.tsv",
    "audio": "fsdd/train-000000.tar.gz",
}


def test_every_registered_data_type_gives_views_the_encoder_reads():
    torch.manual_seed(0)
    enc = EncoderConfig(size="custom", width=16, depth=1, heads=2, patch_size=4, series_patch=8)
    cases = {
        "table": (InputSpec(modality="table", num_features=3, cardinalities=[4]),
                  {"features": torch.randn(6, 3), "categories": torch.randint(0, 4, (6, 1))}),
        "series": (InputSpec(modality="series", channels=2, series_length=32), torch.randn(6, 2, 32)),
        "audio": (InputSpec(modality="audio", image_size=16, sample_rate=8000), torch.randn(6, 8000)),
        "image": (InputSpec(channels=1, image_size=8), torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)),
    }
    assert set(REGISTRY) == set(cases)
    for name, (spec, x) in cases.items():
        encoder = build_encoder(enc, spec)
        views = data_type(spec).views(x, 2, encoder)
        assert len(views) == 2
        both = cat_inputs(views)
        if name != "image":  # images are handed to the encoder through to_input in the methods
            out = encoder(both)
            assert out.shape[0] == 12 and torch.isfinite(out).all(), name
        # a view differs from the input (and from the other view)
        a, b = (v["features"] if isinstance(v, dict) else v for v in views)
        assert not torch.equal(torch.nan_to_num(a.float()), torch.nan_to_num(b.float())), name


def test_image_text_and_audio_text_share_their_data_type():
    assert data_type("image_text") is data_type("image") and data_type("audio_text") is data_type("audio")
    with pytest.raises(ValueError, match="no data type"):
        data_type("video")


def selfsup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(DATA))
@pytest.mark.parametrize("method", ["mae", "simclr", "dino"])
def test_every_method_pretrains_on_every_data_type(method, kind, shared_data, tmp_path):
    data = DATA[kind] if ":" in DATA[kind] else str(shared_data / DATA[kind])
    out = selfsup("pretrain", "--method", method, "--data", data, "--steps", "3", "--out", str(tmp_path / "run"),
                  *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


@pytest.mark.slow
def test_audio_mae_evaluates_with_knn(shared_data, tmp_path):
    run = tmp_path / "run"
    out = selfsup("pretrain", "--method", "mae", "--data", str(shared_data / DATA["audio"]), "--steps", "3",
                  "--out", str(run), *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    out = selfsup("evaluate", str(run), "--data", str(shared_data / "fsdd" / "test-000000.tar.gz"),
                  "--protocol", "knn", "--shots", "5", "--seeds", "1", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    records = json.loads(out.stdout[out.stdout.index("["):])
    ssl = [r for r in records if r["encoder"] == "ssl" and r["protocol"] == "knn"]
    assert ssl and 0.0 <= ssl[0]["mean"] <= 1.0 and ssl[0]["n_test"] > 50
