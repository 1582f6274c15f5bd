"""Crash-safe checkpoint files.

A checkpoint is written to a temporary file in the same folder, flushed to disk with fsync and
moved over the old one with ``os.replace``, which is atomic on POSIX: a kill at any moment leaves
either the previous checkpoint or the new one, never a torn file. Loading uses
``torch.load(weights_only=True)`` so a checkpoint cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from selfsup.files import atomic_open


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:  # selfsup.files: temporary file, fsync, rename
        torch.save(obj, f)


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` that refuses pickled code; a clear one-line error for a bad file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not a safe checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"refusing to load {path}: not a plain-tensor checkpoint ({first})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with atomic writes and weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return safe_torch_load(path, map_location or "cpu")


def newest_good_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``*.ckpt`` in ``folder`` that loads, or None.

    Newest by modification time, ``last.ckpt`` first on a tie; a file that is torn, corrupt or
    holds pickled code is passed over for the next one (the engine keeps ``previous.ckpt``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    newest_first = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"),
                          reverse=True)
    for p in newest_first:
        try:
            safe_torch_load(p)
            return p
        except ValueError:
            continue
    return None
