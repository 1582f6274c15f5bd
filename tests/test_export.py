"""ONNX export computes the same function as the torch encoder."""

import pytest
import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders.vit import vit

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from selfsup.export import check_onnx, export_onnx  # noqa: E402


@pytest.mark.parametrize("pool", ["avg", "token+avg"])
def test_onnx_matches_torch_on_another_batch_size(tmp_path, pool):
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=2, heads=2, img_size=16, patch_size=4, in_chans=3, pool=pool)
    path = export_onnx(model, InputSpec(channels=3, image_size=16), tmp_path / "enc.onnx")
    assert model.training  # export leaves the mode as it found it
    for batch in (1, 5):
        assert check_onnx(model, path, torch.randn(batch, 3, 16, 16)) <= 1e-4


def test_onnx_from_example_input_and_fixed_batch(tmp_path):
    torch.manual_seed(0)
    model = vit("custom", width=32, depth=1, heads=4, img_size=8, patch_size=4, in_chans=1).eval()
    x = torch.randn(3, 1, 8, 8)
    path = export_onnx(model, x, tmp_path / "enc.onnx", dynamic_batch=False)
    assert check_onnx(model, path, x) <= 1e-4
