"""``selfsup.Embedder``: a selfsup encoder as a scikit-learn transformer, for pipelines.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    clf = make_pipeline(selfsup.Embedder("runs/mae"), LogisticRegression()).fit(X_train, y_train)

``Embedder.from_pretrained(ref)`` loads at once (a run folder, an ``encoder.safetensors`` file or a
public model reference, as every command takes them); ``save_pretrained(dir)`` writes
``dir/encoder.safetensors`` (weights + config metadata), which ``from_pretrained(dir)`` reads back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from selfsup import runs


class Embedder(TransformerMixin, BaseEstimator):
    """Inputs -> pooled encoder features (N, F) float32.

    ``X``: what the encoder reads, as ``selfsup embed`` reads it: uint8 images (N, C, H, W) at the
    encoder's ``spec.image_size``, series (N, C, T), or a table's dict of arrays. ``fit`` loads the
    encoder (it learns nothing from ``X``: the features are the pretrained encoder's); ``transform``
    encodes in batches of ``batch_size`` on ``device`` ("cpu", "auto", "cuda"...).
    """

    def __init__(self, source: str | Path = "", batch_size: int = 256, device: str = "cpu"):
        self.source, self.batch_size, self.device = source, batch_size, device

    def fit(self, X=None, y=None) -> Embedder:  # noqa: N803 - scikit-learn's names
        if not str(self.source):
            raise ValueError("Embedder needs a source: a run folder, an encoder file or a model reference")
        self.encoder_, self.spec_, self.config_ = runs.load_encoder(self.source, device=self.device)
        self.n_features_out_ = int(getattr(self.encoder_, "num_features", 0)) or None
        return self

    def transform(self, X) -> np.ndarray:  # noqa: N803
        from selfsup.encoders.inference import encode_images

        check_is_fitted(self, "encoder_")
        return encode_images(self.encoder_, X, batch_size=self.batch_size).numpy()

    @property
    def spec(self):
        """The encoder's input spec (what ``X`` must look like); after ``fit``."""
        check_is_fitted(self, "encoder_")
        return self.spec_

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs) -> Embedder:
        """An Embedder with its encoder loaded (``fit`` done)."""
        return cls(source, **kwargs).fit()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory/encoder.safetensors`` (timm-named weights, config and input spec in the
        metadata); ``from_pretrained(directory)`` loads it back. Returns the file."""
        check_is_fitted(self, "encoder_")
        path = Path(directory) / runs.ENCODER
        return runs.write_encoder(self.encoder_.state_dict(), self.config_, self.spec_, path)


def from_pretrained(source: str | Path, **kwargs) -> Embedder:
    """``Embedder.from_pretrained``: ``selfsup.from_pretrained("runs/mae").transform(X)``."""
    return Embedder.from_pretrained(source, **kwargs)


__all__ = ["Embedder", "from_pretrained"]
