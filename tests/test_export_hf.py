import json

import pytest
import torch

from selfsup.encoders.vit import vit
from selfsup.export.hf import export_hf, export_timm, from_hf, to_hf


def tiny():
    torch.manual_seed(0)
    return vit("custom", width=32, depth=2, heads=4, img_size=16, patch_size=4, in_chans=3).eval()


def test_rename_roundtrip_is_exact():
    model = tiny()
    state = model.state_dict()
    back = from_hf(to_hf(state))
    assert set(back) == set(state)
    for k in state:
        torch.testing.assert_close(back[k], state[k], rtol=0, atol=0)


def test_hugging_face_vitmodel_computes_the_same_function(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny()
    folder = export_hf(model, tmp_path / "hf")
    hf = transformers.ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ours = model.forward_features(x)
        theirs = hf(pixel_values=x).last_hidden_state
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # and back: Hugging Face weights load into our ViT
    again = vit("custom", width=32, depth=2, heads=4, img_size=16, patch_size=4, in_chans=3).eval()
    again.load_state_dict(from_hf(hf.state_dict()), strict=False)
    torch.testing.assert_close(again.forward_features(x), ours, atol=1e-6, rtol=1e-6)


def test_timm_export_names_and_config(tmp_path):
    from safetensors.torch import load_file

    model = vit("tiny", img_size=224, patch_size=16, depth=1)
    folder = export_timm(model, tmp_path / "timm")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_args"]["embed_dim"] == 192 and cfg["architecture"] == "vit_custom"
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())
