"""The report in a real browser: headless Chromium renders it offline to a non-trivial screenshot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.interpret import build_report
from selfsup.methods import build_method
from test_report import fake_images, fake_records

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium)"),
]


def load_screenshot_script():
    spec = importlib.util.spec_from_file_location("screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_chromium(tmp_path: Path):
    (tmp_path / "metrics.json").write_text(json.dumps(fake_records()))
    (tmp_path / "loss_history.json").write_text(json.dumps([[s, 1.0 / (1 + s)] for s in range(50)]))
    method = build_method("mae", {"decoder_width": 32, "decoder_depth": 1, "decoder_heads": 2},
                          EncoderConfig(size="custom", width=32, depth=1, heads=2, patch_size=4),
                          InputSpec(channels=1, image_size=16))
    images, labels = fake_images(24)
    html = build_report(tmp_path, method=method, images=images, labels=labels)

    out = load_screenshot_script().screenshot(html, tmp_path / "shot.png", width=1280, height=3000,
                                              chromium=str(CHROMIUM))
    assert out.stat().st_size > 50_000
    img = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert img.shape == (3000, 1280, 3)
    assert img.std() > 20, "screenshot is (nearly) one colour"
    top = img[:300, 100:1180]  # the header: dark title text on white
    assert (top.min(axis=-1) < 80).mean() > 0.002 and (top.min(axis=-1) > 240).mean() > 0.5
    saturated = (img.max(axis=-1) - img.min(axis=-1)) > 60  # coloured figure pixels (curves, maps)
    assert saturated.mean() > 0.005, "no figures visible in the screenshot"
