"""Import me before torch: OpenMP threads then wait passively, as ``import selfsup`` arranges.

Spinning waiters stall every parallel region whenever another process shares the cores, which on a
busy 2-core machine slows small models 5-20x and buries any comparison in noise. Every contender
runs in the same process, so all get the same policy. An explicit OMP_WAIT_POLICY wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
