"""The shipped series generalist: resampling, channel independence, loading by reference, and the
synthetic corpus it is trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.data.synthetic import kernel_synth, synthetic_classes
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.generalist import GENERALISTS, WEIGHTS, ResampledSeries, resample


def test_resampling_keeps_the_shape_and_drops_the_padding():
    ramp = torch.linspace(0, 1, 50)[None]
    torch.testing.assert_close(resample(ramp, 200)[0], torch.linspace(0, 1, 200))
    padded = torch.cat([torch.linspace(0, 1, 40), torch.full((20,), float("nan"))])[None]
    padded[0, 10] = float("nan")  # a gap inside: filled linearly
    torch.testing.assert_close(resample(padded, 100)[0], torch.linspace(0, 1, 100), atol=1e-5, rtol=0)


def test_each_channel_is_encoded_alone_and_the_length_hardly_matters():
    torch.manual_seed(0)
    inner = build_encoder(EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8),
                          InputSpec(modality="series", channels=1, series_length=64)).eval()
    enc = ResampledSeries.wrap(inner, 64, channels=2)
    t = torch.linspace(0, 6.28, 64)
    x = torch.stack([torch.sin(t), torch.cos(3 * t)])[None]  # (1, 2, 64)
    with torch.no_grad():
        both = enc(x)
        assert both.shape == (1, 2 * inner.num_features) == (1, enc.num_features)
        torch.testing.assert_close(both[:, inner.num_features:], inner(x[:, 1:]))
        assert enc.state_dict().keys() == inner.state_dict().keys()  # pretrain --init loads it as a PatchTST
        fine = torch.nn.functional.interpolate(x, size=256, mode="linear", align_corners=True)
        torch.testing.assert_close(enc(fine), both, atol=0.05, rtol=0.05)


def test_the_synthetic_corpus_is_reproducible_and_varied():
    a, b = kernel_synth(20, 128, seed=3), kernel_synth(20, 128, seed=3)
    assert a.shape == (20, 1, 128) and np.array_equal(a, b) and np.isfinite(a).all()
    assert not np.array_equal(a, kernel_synth(20, 128, seed=4))
    x, y = synthetic_classes(3, 128)
    assert x.shape == (24, 1, 128) and np.bincount(y).tolist() == [3] * 8


def test_a_shipped_model_loads_by_reference(tmp_path, monkeypatch):
    from selfsup import runs
    from selfsup.encoders import generalist

    cfg, spec = EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8), InputSpec(
        modality="series", channels=1, series_length=64)
    torch.manual_seed(0)
    inner = build_encoder(cfg, spec)
    runs.write_encoder(inner.state_dict(), cfg, spec, tmp_path / GENERALISTS["series-small"])
    monkeypatch.setattr(generalist, "WEIGHTS", tmp_path)
    assert runs.is_reference("selfsup:series-small")
    enc, spec3, _ = runs.load_encoder("selfsup:series-small?channels=3")
    assert spec3.modality == "series" and spec3.channels == 3 and enc.num_features == 3 * inner.num_features
    x = torch.randn(4, 3, 90)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[:, :16], inner.eval()(resample(x[:, 0], 64)[:, None]))
    with pytest.raises(ValueError, match="shipped"):
        runs.load_encoder("selfsup:nope")


@pytest.mark.skipif(not (WEIGHTS / GENERALISTS["series-small"]).is_file(), reason="series-small not trained here")
def test_series_small_is_shipped_small():
    from selfsup import runs

    assert (WEIGHTS / GENERALISTS["series-small"]).stat().st_size <= 5 * 2**20
    enc, _, _ = runs.load_encoder("selfsup:series-small")
    with torch.no_grad():
        f = enc(torch.randn(2, 1, 100))
    assert f.shape == (2, enc.num_features) and torch.isfinite(f).all()


def test_anomaly_fit_and_score_with_a_shipped_model(tmp_path, monkeypatch):
    import selfsup.api as ss
    from selfsup import runs
    from selfsup.encoders import generalist

    cfg, spec = EncoderConfig(size="custom", width=16, depth=1, heads=2, series_patch=8), InputSpec(
        modality="series", channels=1, series_length=64)
    torch.manual_seed(0)
    runs.write_encoder(build_encoder(cfg, spec).state_dict(), cfg, spec, tmp_path / GENERALISTS["series-small"])
    monkeypatch.setattr(generalist, "WEIGHTS", tmp_path)
    monkeypatch.chdir(tmp_path)
    t = np.arange(64)
    rng = np.random.default_rng(0)
    normal = np.sin(2 * np.pi * t / 16 + rng.uniform(0, 6, (60, 1))) + 0.1 * rng.normal(size=(60, 64))
    odd = rng.normal(size=(6, 64)) * 3  # noise, not waves
    np.savez(tmp_path / "train.npz", series=normal[:40, None].astype(np.float32))
    np.savez(tmp_path / "test.npz", series=np.r_[normal[40:], odd][:, None].astype(np.float32),
             y=np.r_[np.zeros(20), np.ones(6)].astype(np.int64))
    bank = ss.anomaly_fit("selfsup:series-small", str(tmp_path / "train.npz"), data_options={"split": "all"})
    assert bank.is_file() and bank.parent.parent.name.startswith("series-small")
    recs = ss.anomaly_score(str(bank.parent), str(tmp_path / "test.npz"))
    got = {(r["encoder"], r["detector"]) for r in recs if r["metric"] == "auroc"}
    assert {("foundation", "knn"), ("foundation", "ensemble"), ("raw", "iforest")} <= got
    assert all(r["model"] == "selfsup:series-small" for r in recs if r["encoder"] == "foundation")


@pytest.mark.skipif(not (WEIGHTS / GENERALISTS["series-small"]).is_file(), reason="series-small not trained here")
def test_report_takes_a_model_reference(tmp_path, monkeypatch):
    """`selfsup report REF --data D` (issue 23: report accepts model references like every other
    command): the report of the reference's embedding map goes to its results folder, never elsewhere."""
    from typer.testing import CliRunner

    from selfsup.cli import app

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 64)
    rows = [[c] + list(np.sin(2 * np.pi * (2 + 3 * c) * t + rng.uniform(0, 6)) + 0.1 * rng.normal(size=64))
            for c in (0, 1) for _ in range(12)]
    np.savetxt(tmp_path / "Toy_TEST.tsv", np.array(rows), delimiter="\t")
    res = CliRunner().invoke(app, ["report", "selfsup:series-small", "--data", str(tmp_path / "Toy_TEST.tsv")])
    assert res.exit_code == 0, res.output
    made = list((tmp_path / "runs").glob("series-small-*/report.html"))
    assert len(made) == 1 and "<html" in made[0].read_text().lower()
    assert (made[0].parent / "reference.json").is_file()
    res = CliRunner().invoke(app, ["report", "selfsup:series-small"])  # no run config to fall back on
    assert res.exit_code != 0 and "give --data" in str(res.exception)
