import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see selfsup/__init__.py

import pytest  # noqa: E402
import torch  # noqa: E402

# ../shared/data beside the repository; SELFSUP_SHARED_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(os.environ.get("SELFSUP_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny test models run several times faster on one thread than on two that contend."""
    torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


def pytest_configure(config):
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
