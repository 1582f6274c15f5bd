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


def test_timm_export_names_a_real_architecture_and_maps_avg_pooling(tmp_path):
    """The layout timm loads (checked once in the peer env: benchmarks/check_timm_export.py): a real
    architecture name, model_args that rebuild the encoder, and our average pooling (final norm on
    every token, then the mean of the patch tokens) as timm's global_pool="avg", fc_norm=False."""
    from safetensors.torch import load_file

    model = vit("tiny", img_size=32, patch_size=4, depth=12, pool="avg")
    folder = export_timm(model, tmp_path / "timm")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224"  # a name in timm's registry; size and patch overridden
    args = cfg["model_args"]
    assert (args["img_size"], args["patch_size"], args["embed_dim"], args["depth"], args["num_heads"]) == (32, 4, 192,
                                                                                                           12, 3)
    assert (args["global_pool"], args["fc_norm"], args["num_classes"]) == ("avg", False, 0)
    keys = set(load_file(str(folder / "model.safetensors")))
    assert keys == set(model.state_dict()) and "norm.weight" in keys and not any(k.startswith("fc_norm") for k in keys)
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 32] and pre["mean"] == [0.5] * 3 and pre["std"] == [0.25] * 3
    assert pre["crop_pct"] == 1.0
    custom = json.loads((export_timm(tiny(), tmp_path / "custom") / "config.json").read_text())
    assert custom["architecture"] == "vit_base_patch16_224" and custom["model_args"]["embed_dim"] == 32


def test_timm_export_refuses_what_timm_cannot_express(tmp_path):
    with pytest.raises(ValueError, match="timm cannot express encoder.pool 'token\\+avg'") as err:
        export_timm(vit("custom", width=32, depth=1, heads=2, img_size=16, patch_size=4, pool="token+avg"),
                    tmp_path / "t")
    assert "\n" not in str(err.value) and not (tmp_path / "t").exists()
    with pytest.raises(ValueError, match="SwiGLU"):
        export_timm(vit("custom", width=32, depth=1, heads=2, img_size=16, patch_size=4, mlp_layer="swiglu"),
                    tmp_path / "s")


@pytest.mark.parametrize("pool", ["avg", "token", "map"])
def test_timm_computes_the_same_function(tmp_path, pool):
    timm = pytest.importorskip("timm")  # not in the project's venv; benchmarks/check_timm_export.py in the peer env
    model = vit("custom", width=32, depth=2, heads=4, img_size=16, patch_size=4, pool=pool).eval()
    folder = export_timm(model, tmp_path / "timm")
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), model(x), atol=1e-5, rtol=1e-5)


def test_hf_export_writes_the_input_scale(tmp_path):
    folder = export_hf(tiny(), tmp_path / "hf")
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.5] * 3 and pre["image_std"] == [0.25] * 3 and pre["rescale_factor"] == 1 / 255
    assert pre["size"] == {"height": 16, "width": 16}
    transformers = pytest.importorskip("transformers")
    import numpy as np
    from PIL import Image

    from selfsup.data.spec import normalize, to_float

    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    theirs = processor(Image.fromarray(pixels), return_tensors="pt")["pixel_values"]
    ours = normalize(to_float(torch.from_numpy(pixels).permute(2, 0, 1)[None]))
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)  # the scale the weights were trained on
