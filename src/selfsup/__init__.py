"""selfsup: self-supervised pretraining and few-label evaluation."""

import os

# OpenMP threads that spin while they wait make small CPU models 5-20x slower as soon as anything
# else runs on the machine (measured here: an MAE step took 5.2 s instead of 0.27 s); waiting
# passively costs little when the machine is idle. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
