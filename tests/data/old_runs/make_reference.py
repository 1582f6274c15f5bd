"""Regenerate reference.npz: features of the stored old runs on fixed inputs, and the table run's
reconstruction errors, computed by the code that wrote them (main at 0d00ee4 / its TableMAE, before
the one-trunk and one-MAE refactor of issue 19). Run from the repo root:
``python tests/data/old_runs/make_reference.py``; only rerun it on purpose (it defines "unchanged")."""

from pathlib import Path

import numpy as np
import torch

from selfsup.encoders import to_input
from selfsup.runs import load_encoder, load_method

HERE = Path(__file__).parent


def inputs() -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    return {
        "image": g.random((4, 1, 8, 8), dtype=np.float32),
        "table": g.standard_normal((4, 27)).astype(np.float32),
        "series": g.standard_normal((4, 1, 96)).astype(np.float32),
    }


def features(kind: str, x: np.ndarray) -> np.ndarray:
    encoder, _, _ = load_encoder(HERE / f"{kind}_mae")
    t = torch.from_numpy(x)
    with torch.no_grad():
        if kind == "image":
            return encoder(to_input(encoder, t)).numpy()
        if kind == "table":
            return encoder({"features": t, "categories": torch.zeros(4, 0, dtype=torch.long)}).numpy()
        return encoder({"series": t}).numpy()


def table_errors(x: np.ndarray) -> np.ndarray:
    """The table run's per-cell reconstruction errors (4, 27), 4 masks from seed 0."""
    method = load_method(HERE / "table_mae")
    batch = {"features": torch.from_numpy(x), "categories": torch.zeros(4, 0, dtype=torch.long)}
    return method.reconstruction_errors(batch, passes=4, seed=0).numpy()


if __name__ == "__main__":
    xs = inputs()
    np.savez(HERE / "reference.npz", table_errors=table_errors(xs["table"]),
             **{f"{k}_features": features(k, v) for k, v in xs.items()})
