"""The command line's surface (issue 23): `selfsup --help` imports nothing heavy, warnings are not
hidden globally, deprecated spellings still work with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_help_imports_no_torch_and_hides_no_warnings():
    code = ("import os, sys\n"
            "from selfsup import cli\n"
            "sys.argv = ['selfsup', '--help']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, os.environ.get('PYTHONWARNINGS'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pretrain" in r.stdout and r.stdout.strip().splitlines()[-1] == "False None"


def test_warnings_reach_the_tests():
    """pyproject filters only known third-party noise by message: a UserWarning or DeprecationWarning
    raised here is seen (it used to ignore both categories wholesale)."""
    with warnings.catch_warnings(record=True) as got:  # keeps the active filters, records what passes
        warnings.warn("selfsup: a user warning", UserWarning, stacklevel=1)
        warnings.warn("selfsup: a deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in got] == ["selfsup: a user warning", "selfsup: a deprecation"]


def test_one_vocabulary_for_caps_and_output_folders():
    """`--max-steps` is the cap everywhere (forecast keeps `--steps` as its other name); the Python API
    says `out` for an output folder (anomaly_score's `out_dir` is kept, deprecated)."""
    import inspect

    from typer.testing import CliRunner

    from selfsup import api
    from selfsup.cli import app

    assert "--max-steps" in CliRunner().invoke(app, ["forecast", "--help"]).output
    for fn in (api.anomaly_score, api.outlier_score, api.evaluate, api.adapt, api.pretrain, api.export):
        assert "out" in inspect.signature(fn).parameters, fn.__name__
