"""Embedding over several processes (``--devices N``): streamed in batches, rows in the input order,
the same numbers as one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from selfsup import runs
from selfsup.cli import app
from selfsup.config import build_config
from selfsup.data import open_source
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.spread import embed_source

TINY = EncoderConfig(size="custom", patch_size=4, width=32, depth=1, heads=2, pool="avg")
SPEC = InputSpec(channels=1, image_size=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spread")
    holder = nn.Module()
    torch.manual_seed(0)
    holder.encoder = build_encoder(TINY, SPEC)
    runs.save_encoder(holder, build_config({"method": {"name": "mae"}, "encoder": TINY.model_dump()}), SPEC,
                      root / "run")
    g = np.random.default_rng(0)
    np.savez(root / "data.npz", images=g.integers(0, 256, (23, 8, 8)).astype(np.uint8), labels=np.arange(23) % 3)
    return root / "run", root


def test_embed_source_streams_batches_in_order(tiny_run):
    run, root = tiny_run
    encoder, spec, _ = runs.load_encoder(run)
    src = open_source(str(root / "data.npz"), **spec.reader_options())
    x, y = src.arrays()
    lines: list[str] = []
    got = embed_source(encoder, src, spec.batch_input, batch_size=4, max_samples=10, log=lines.append)
    assert got["features"].shape == (10, 32) and got["labels"].tolist() == (np.arange(10) % 3).tolist()
    assert torch.allclose(got["features"], extract_features(encoder, x[:10]), atol=1e-5)
    assert len(got["keys"]) == 10 and len(set(got["keys"])) == 10


@pytest.mark.slow
def test_embed_two_processes_equal_one(tiny_run):
    """`selfsup embed RUN --data digits:test --devices 2` (2 gloo processes) == `--devices 1`, same order."""
    run, root = tiny_run
    runner = CliRunner()
    for n in (1, 2):
        res = runner.invoke(app, ["embed", str(run), "--data", "digits:test", "--out", str(root / f"d{n}.npz"),
                                  "--devices", str(n), "--device", "cpu"])
        assert res.exit_code == 0, res.output
    one, two = np.load(root / "d1.npz"), np.load(root / "d2.npz")
    assert one["features"].shape == (899, 32)
    assert (one["keys"] == two["keys"]).all() and (one["labels"] == two["labels"]).all()
    assert np.abs(one["features"] - two["features"]).max() <= 1e-4


def test_progress_lines_say_rate_and_time_left(tiny_run):
    from selfsup.encoders.inference import encode_images, progress_ticker

    lines: list[str] = []
    tick = progress_ticker(lines.append, every=0.0)
    tick(10, 40)
    assert lines and "10/40 samples" in lines[-1] and "/s" in lines[-1] and "left" in lines[-1]
    progress_ticker(None)(1, 2)  # no log: silent
    encoder, _, _ = runs.load_encoder(tiny_run[0])
    out = encode_images(encoder, torch.zeros(5, 1, 8, 8, dtype=torch.uint8), batch_size=2, progress=lines.append)
    assert out.shape == (5, 32)


@pytest.mark.slow
def test_evaluation_features_over_two_processes_equal_one(tiny_run):
    """`evaluate --devices 2`'s feature extraction (evaluate.spread.spread_features): 2 gloo processes,
    rows in order, equal to one process; the caller's encoder is left where it was."""
    from selfsup.evaluate.spread import spread_features

    encoder, _, _ = runs.load_encoder(tiny_run[0])
    x = torch.randint(0, 256, (13, 1, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    two = spread_features(encoder, x, devices=2, batch_size=4)
    assert two.shape == (13, 32)
    assert torch.allclose(two, extract_features(encoder, x), atol=1e-5)
    assert torch.allclose(spread_features(encoder, x, devices=1), two, atol=1e-5)
