"""selfsup: self-supervised pretraining and few-label evaluation."""

import os

# OpenMP threads that spin while they wait make small CPU models 5-20x slower as soon as anything
# else runs on the machine (measured here: an MAE step took 5.2 s instead of 0.27 s); waiting
# passively costs little when the machine is idle. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# The Python API's front door, imported on first use so `import selfsup` (and `selfsup --help`)
# stays light: selfsup.Embedder, selfsup.from_pretrained, selfsup.load_encoder.
_LAZY = {"Embedder": "selfsup.api.embedder", "from_pretrained": "selfsup.api.embedder",
         "load_encoder": "selfsup.runs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
