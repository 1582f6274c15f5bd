"""The Python API in the ecosystem's habits (issue 23): ``load_encoder`` names what it returns,
``selfsup.Embedder`` is a scikit-learn transformer that works in a Pipeline, and
``from_pretrained`` / ``save_pretrained`` round-trip an encoder."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import selfsup
from selfsup import runs
from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig, build_encoder
from selfsup.encoders.inference import encode_images

TINY = EncoderConfig(size="custom", patch_size=4, width=32, depth=2, heads=2, pool="avg")
SPEC = InputSpec(channels=1, image_size=8)


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    x[y == 0, :, :, :4] += 180
    x[y == 1, :, :, 4:] += 180
    return x, y


def encoder_file(tmp_path) -> str:
    torch.manual_seed(0)
    enc = build_encoder(TINY, SPEC)
    return str(runs.write_encoder(enc.state_dict(), TINY, SPEC, tmp_path / "run" / runs.ENCODER))


def test_load_encoder_unpacks_and_names_its_parts(tmp_path):
    loaded = selfsup.load_encoder(encoder_file(tmp_path))
    encoder, spec, config = loaded
    assert loaded.spec is spec and spec.image_size == 8 and loaded.config.width == 32 and loaded.encoder is encoder


def test_embedder_is_a_scikit_learn_transformer_in_a_pipeline(tmp_path):
    source = encoder_file(tmp_path)
    x, y = halves(40)
    xt, yt = halves(40, seed=1)
    emb = selfsup.Embedder(source)
    feats = emb.fit(x).transform(x)
    want = encode_images(runs.load_encoder(source).encoder, x).numpy()
    assert feats.shape == (40, 32) and np.allclose(feats, want, atol=1e-6)
    assert clone(emb).get_params() == {"source": source, "batch_size": 256, "device": "cpu"}
    pipe = make_pipeline(selfsup.Embedder(source), LogisticRegression(max_iter=1000)).fit(x, y)
    assert (pipe.predict(xt) == yt).mean() > 0.8  # bright-half images: separable even from random features


def test_from_pretrained_and_save_pretrained_round_trip(tmp_path):
    x, _ = halves(10)
    emb = selfsup.from_pretrained(encoder_file(tmp_path))
    saved = emb.save_pretrained(tmp_path / "copy")
    again = selfsup.Embedder.from_pretrained(tmp_path / "copy")
    assert saved.name == "encoder.safetensors" and again.spec == emb.spec
    assert np.array_equal(again.transform(x), emb.transform(x))
