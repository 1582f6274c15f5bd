"""scripts/device_check.sh --dry: the GPU check's every step runs on the CPU at tiny sizes, so the script
is known to work when a GPU is lent (tests never depend on a GPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    if shutil.which("bash") is None or shutil.which("awk") is None:
        pytest.skip("bash and awk are needed to run scripts/device_check.sh")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "check"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), "--dry", str(out)], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads((out / "env.json").read_text())["dry"] is True
    mae = json.loads((out / "mae.json").read_text())
    assert any(r["peer"] == "selfsup" and r["metric"] == "images_per_s" and r["mean"] > 0 for r in mae)
    for m in ("simclr", "dino"):
        recs = json.loads((out / f"knn-{m}.json").read_text())
        top1 = [r for r in recs if r["protocol"] == "knn" and r["metric"] == "top1"]
        assert top1 and 0 <= top1[0]["mean"] <= 1
    assert json.loads((out / "embed.json").read_text())["cpu"]["images"] == 200
    assert "skipped" in json.loads((out / "fsdp.json").read_text())["fsdp"]
    summary = (out / "summary.txt").read_text()
    assert "knn simclr" in summary and "embed on cpu" in summary
