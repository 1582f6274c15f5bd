"""Does `selfsup export --format timm` load in timm and compute the same function? Two steps, two venvs.

timm does not import in the project's venv (no CPU torchvision), so the check runs in the peer
environment (`../shared/peers/`, never a dependency):

    .venv/bin/python benchmarks/check_timm_export.py make /tmp/timm-check        # selfsup side
    $(../shared/peers/setup.sh) benchmarks/check_timm_export.py check /tmp/timm-check   # timm side

`make` builds ViTs covering the options the export maps (average pooling with fc_norm off or on,
CLS pooling, a preset shape, registers, layer scale, pre-norm without patch bias, attention
pooling with and without a class token, the activations), exports each with `export_timm`, and
saves an input batch with our `forward_features` (every token) and `forward` (pooled features).
`check` loads each folder with `timm.create_model("local-dir:FOLDER", pretrained=True)` and
compares; it exits 1 on any difference above 1e-5.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

VARIANTS = {
    "avg_custom_grey": dict(size="custom", width=64, depth=2, heads=4, img_size=32, patch_size=4, in_chans=1,
                            pool="avg"),
    "token_tiny_preset": dict(size="tiny", img_size=32, patch_size=4, in_chans=3, pool="token"),
    "avg_tiny_preset_5ch": dict(size="tiny", img_size=32, patch_size=8, in_chans=5, pool="avg"),
    "avg_fc_norm_registers": dict(size="custom", width=64, depth=2, heads=4, img_size=32, patch_size=8, in_chans=3,
                                  pool="avg", fc_norm=True, reg_tokens=2, init_values=0.1, pre_norm=True,
                                  patch_bias=False, act_layer="quick_gelu"),
    "map_with_cls": dict(size="custom", width=64, depth=2, heads=4, img_size=32, patch_size=8, in_chans=3,
                         pool="map", act_layer="gelu_tanh"),
    "map_siglip_style": dict(size="custom", width=64, depth=2, heads=4, img_size=32, patch_size=8, in_chans=3,
                             pool="map", class_token=False, act_layer="gelu_tanh", no_embed_class=True),
}


def make(folder: Path) -> None:
    from selfsup.encoders.vit import vit
    from selfsup.export.hf import export_timm

    folder.mkdir(parents=True, exist_ok=True)
    for name, kw in VARIANTS.items():
        torch.manual_seed(0)
        model = vit(**kw).eval()
        with torch.no_grad():  # random, non-trivial weights everywhere (norms, scales, biases)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        export_timm(model, folder / name)
        x = torch.randn(3, kw["in_chans"], kw["img_size"], kw["img_size"])
        with torch.no_grad():
            torch.save({"x": x, "tokens": model.forward_features(x), "pooled": model(x)}, folder / name / "io.pt")
        print(f"{name}: exported as {json.loads((folder / name / 'config.json').read_text())['architecture']}")


def check(folder: Path) -> int:
    import timm

    worst = 0.0
    for name in VARIANTS:
        model = timm.create_model(f"local-dir:{folder / name}", pretrained=True).eval()
        io = torch.load(folder / name / "io.pt", weights_only=True)
        with torch.no_grad():
            tokens, pooled = model.forward_features(io["x"]), model(io["x"])
        d_tok = float((tokens - io["tokens"]).abs().max())
        d_pool = float((pooled - io["pooled"]).abs().max())
        worst = max(worst, d_tok, d_pool)
        print(f"{name:24} {type(model).__name__} global_pool={model.global_pool!r:6} tokens max|diff| {d_tok:.2e}  "
              f"pooled {tuple(pooled.shape)} max|diff| {d_pool:.2e}")
    print(f"timm {timm.__version__}, torch {torch.__version__}: worst difference {worst:.2e}")
    return int(worst > 1e-5)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        raise SystemExit(__doc__)
    sys.exit(make(Path(sys.argv[2])) if sys.argv[1] == "make" else check(Path(sys.argv[2])))
