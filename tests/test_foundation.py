"""Foundation models through every job, offline: continued pretraining from a saved Hugging Face model
(``pretrain --init``) with the regression guard (``--monitor``), resume, the foundation baseline of
``evaluate --foundation``, and ``embed`` / ``export`` / ``evaluate`` / ``zero-shot`` of a reference
with no training run. Tiny random models are built with ``transformers`` and saved locally, as in
``test_pretrained.py``; the one real checkpoint is the Keras MobileNetV2 in ../shared/weights.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import selfsup.api as ss
from selfsup import runs
from selfsup.cli import app
from selfsup.data import open_source
from selfsup.evaluate.knn import knn_monitor
from selfsup.methods.warmstart import read_warm_start

transformers = pytest.importorskip("transformers", reason="transformers (the interop extra) is not installed")
from test_pretrained import TINY, WEIGHTS, clip_tokenizer, randomise, tiny_clip  # noqa: E402

FAST = ["train.batch_size=16", "data.num_workers=0", "train.log_every=1"]
DINO_SMALL = ["method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16", "method.n_local=0"]


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dinov2")
    randomise(transformers.Dinov2Model(transformers.Dinov2Config(**TINY, mlp_ratio=4))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vitmae(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vitmae")
    cfg = transformers.ViTMAEConfig(**TINY, intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                    decoder_num_attention_heads=2, decoder_intermediate_size=64, mask_ratio=0.5,
                                    layer_norm_eps=1e-6, norm_pix_loss=True)
    randomise(transformers.ViTMAEForPreTraining(cfg)).save_pretrained(folder)
    return folder


def monitor_curve(run: Path) -> list[list[float]]:
    best = next(r for r in json.loads((run / "metrics.json").read_text()) if r["metric"] == "knn_top1_best")
    return best["curve"]


def test_pretrain_init_dinov2_monitor_resume_and_rebuild_alone(tmp_path, dinov2):
    ref = f"hf:{dinov2}"
    run = ss.pretrain("digits:train", "dino", init=ref, monitor="digits:test", steps=2, out=tmp_path / "run",
                      overrides=[*FAST, *DINO_SMALL, "train.monitor_every=1"], log=lambda m: None)
    cfg = runs.load_run_config(run)
    ws = read_warm_start(ref, "dino")
    assert cfg.init == ref and cfg.encoder == ws.config and cfg.data.image_size == 32 and cfg.data.channels == 3
    assert (cfg.train.lr, cfg.train.warmup, cfg.train.layer_decay) == (1e-4, 0.1, 0.75)  # continuing defaults
    # the curve starts with the score of the public model itself, at step 0
    x, y = open_source("digits:test", image_size=32, channels=3).arrays(cfg.train.monitor_max_samples)
    start = knn_monitor(x, y)(ss.load_encoder(ref)[0])
    curve = monitor_curve(run)
    assert [s for s, _ in curve] == [0, 1, 2] and curve[0][1] == pytest.approx(start, abs=1e-6)
    assert (run / runs.ENCODER_LAST).is_file()
    assert "monitor/knn_top1" in (run / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    ss.pretrain(resume=run, steps=4, log=lambda m: None)
    curve = monitor_curve(run)
    assert [s for s, _ in curve] == [0, 1, 2, 3, 4] and curve[0][1] == pytest.approx(start, abs=1e-6)
    best = max(range(len(curve)), key=lambda i: (curve[i][1], -i))
    assert json.loads((run / "metrics.json").read_text())[-2]["step"] == curve[best][0]
    # the run rebuilds from its own files, the reference gone
    moved = tmp_path / "gone"
    shutil.move(dinov2, moved)
    try:
        enc, spec, ecfg = ss.load_encoder(run)
        assert ecfg == ws.config and spec.image_size == 32
        torch.testing.assert_close(enc.state_dict()["pos_embed"], load_file(run / "encoder.safetensors")["pos_embed"])
    finally:
        shutil.move(moved, dinov2)


def test_pretrain_init_vitmae_takes_the_decoder_through_the_cli(tmp_path, vitmae):
    run = tmp_path / "mae"
    res = CliRunner().invoke(app, ["pretrain", "--method", "mae", "--data", "digits:train", "--init", f"hf:{vitmae}",
                                   "--monitor", "digits:test", "--steps", "2", "--out", str(run), *FAST,
                                   "train.monitor_every=2", "train.lr=1e-3"])
    assert res.exit_code == 0, res.output
    cfg = runs.load_run_config(run)
    assert cfg.method["decoder_width"] == 16 and cfg.method["decoder_depth"] == 1 and cfg.method["mask_ratio"] == 0.5
    assert cfg.train.lr == 1e-3 and cfg.train.layer_decay == 0.75  # the run's own value wins, the rest continues
    assert [s for s, _ in monitor_curve(run)] == [0, 2]
    res = CliRunner().invoke(app, ["pretrain", "--resume", str(run), "--steps", "3"])
    assert res.exit_code == 0, res.output
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    # the decoder came from the checkpoint: before training, the method holds the source's decoder weights
    ws = read_warm_start(f"hf:{vitmae}", "mae")
    from selfsup.methods import build_method
    from selfsup.methods.warmstart import apply_warm_start

    mae = apply_warm_start(build_method("mae", cfg.method_options, cfg.encoder, ws.spec), ws)
    for k, v in ws.mae_decoder.state.items():
        torch.testing.assert_close(mae.state_dict()[k], v)


def test_init_from_another_run(tmp_path):
    first = tiny_run(tmp_path)
    run = ss.pretrain("digits:train", "simclr", init=str(first), steps=1, out=tmp_path / "next",
                      overrides=[*FAST, "method.proj_hidden=16", "method.proj_dim=8"], log=lambda m: None)
    assert runs.load_run_config(run).encoder == runs.load_run_config(first).encoder
    assert runs.load_run_config(run).init == str(first.resolve())


def test_continued_run_refuses_a_different_network(tmp_path, dinov2):
    from selfsup.config import ConfigError

    with pytest.raises(ConfigError, match="encoder.depth comes from --init"):
        ss.pretrain("digits:train", "mae", init=f"hf:{dinov2}", steps=1, out=tmp_path / "x",
                    overrides=[*FAST, "encoder.depth=3"], log=lambda m: None)


def test_layer_decay_scales_each_group_lr():
    from selfsup.data.spec import InputSpec
    from selfsup.encoders import EncoderConfig
    from selfsup.methods import build_method
    from selfsup.train.config import TrainConfig
    from selfsup.train.engine import PretrainModule

    cfg = EncoderConfig(size="custom", width=16, depth=2, heads=2, patch_size=4)
    decoder = {"decoder_width": 8, "decoder_depth": 1, "decoder_heads": 2}
    mae = build_method("mae", decoder, cfg, InputSpec(image_size=8))
    opt = PretrainModule(mae, TrainConfig(lr=1.0, layer_decay=0.5, steps=10), 10).configure_optimizers()["optimizer"]
    lrs = sorted({round(g["lr"], 6) for g in opt.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]  # embeddings 0.5^3, block 1, block 2, top (final norm, decoder)


def tiny_run(tmp_path: Path) -> Path:
    return ss.pretrain("digits:train", "mae", steps=2, out=tmp_path / "ssl", log=lambda m: None, overrides=[
        *FAST, "data.image_size=16", "encoder.size=custom", "encoder.width=16", "encoder.depth=1",
        "encoder.heads=2", "method.decoder_width=8", "method.decoder_depth=1", "method.decoder_heads=2"])


def test_evaluate_foundation_writes_foundation_records_and_verdict(tmp_path, dinov2):
    run = tiny_run(tmp_path)
    recs = ss.evaluate(run, "digits:test", train_data="digits:train", protocols=["knn", "linear"], shots=[2],
                       seeds=2, foundation=f"hf:{dinov2}", log=lambda m: None)
    found = [r for r in recs if r["encoder"] == "foundation"]
    assert {r["protocol"] for r in found} == {"knn", "linear"} and all(r["model"] == f"hf:{dinov2}" for r in found)
    assert {(r["protocol"], r["baseline"]) for r in recs if r.get("baseline")} >= {("knn", "foundation"),
                                                                                  ("linear", "foundation")}
    stored = json.loads((run / "metrics.json").read_text())
    assert any(r["encoder"] == "foundation" for r in stored)
    from selfsup.interpret.report import build_report

    assert "foundation" in build_report(run).read_text()


def test_a_reference_is_evaluated_embedded_and_exported_with_no_run(tmp_path, dinov2, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = f"hf:{dinov2}"
    recs = ss.evaluate(ref, "digits:test", protocols=["knn"], shots=[2], seeds=2, log=lambda m: None)
    assert {r["encoder"] for r in recs} == {"foundation", "raw"}
    assert any(r.get("baseline") == "raw" and r["encoder"] == "foundation" for r in recs)
    out = next(Path("runs").glob(f"{dinov2.name}-*"))
    assert json.loads((out / "reference.json").read_text())["reference"] == ref
    runner = CliRunner()
    res = runner.invoke(app, ["embed", ref, "--data", "digits:test", "--out", "f.npz", "--max-samples", "20"])
    assert res.exit_code == 0, res.output
    f = np.load("f.npz")
    assert f["features"].shape == (20, 32) and f["labels"].shape == (20,)
    res = runner.invoke(app, ["export", ref, "--format", "onnx", "--out", "m.onnx"])
    assert res.exit_code == 0, res.output
    assert Path("m.onnx").is_file() and "onnxruntime matches torch" in res.output
    res = runner.invoke(app, ["export", ref])  # safetensors into runs/<model>-<time>/export/
    assert res.exit_code == 0, res.output
    written = sorted(Path("runs").glob("*/export/encoder.safetensors"))
    enc, spec, cfg = ss.load_encoder(written[-1])  # a selfsup encoder file now, no reference needed
    assert cfg == ss.load_encoder(ref)[2] and spec.image_size == 32


def test_keras_mobilenet_reference_embeds_at_a_chosen_size(tmp_path):
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} not found")
    ref = f"torchvision:{WEIGHTS}?origin=keras&image_size=64"
    assert runs.is_reference(ref) and runs.source_name(ref) == "mobilenetv2_035_imagenet"
    out = ss.embed(ref, "digits:test", tmp_path / "f.safetensors", max_samples=8, log=lambda m: None)
    assert load_file(out)["features"].shape == (8, 1280)
    enc, spec, _ = ss.load_encoder(ref)
    assert spec.image_size == 64
    x = torch.rand(2, 3, 64, 64)
    final, maps = enc.forward_intermediates(x)
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2] and torch.equal(final, enc.forward_features(x))


def caption_shard(path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue"]
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            a = rng.integers(0, 40, (32, 32, 3)).astype(np.uint8)
            a[..., i % 3] += 200
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            caps = json.dumps({"captions": [f"a {words[i % 3]} photo", f"{words[i % 3]} square"]}).encode()
            for ext, data in (("png", buf.getvalue()), ("json", caps), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"k{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_clip_continues_with_its_tokenizer_and_references_do_zero_shot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "clip"
    tiny_clip().save_pretrained(folder)
    tok = clip_tokenizer(folder, 300)
    data = str(caption_shard(tmp_path / "caps.tar"))
    ref = f"hf:{folder}"
    run = ss.pretrain(data, "clip", init=ref, steps=2, out=tmp_path / "run", overrides=FAST, log=lambda m: None)
    method = ss.load_method(run)
    assert method.text.tokenize(["a red photo"])[0, 0] == tok.token_to_id("<|startoftext|>")  # not a new BPE
    assert (run / "tokenizer.json").is_file()
    ss.pretrain(resume=run, steps=3, log=lambda m: None)
    recs = ss.zero_shot(ref, data, ["red", "green", "blue"], log=lambda m: None)
    assert recs[0]["encoder"] == "foundation" and 0 <= recs[0]["mean"] <= 1
    recs = ss.retrieve(run, data, log=lambda m: None)
    assert recs[0]["encoder"] == "ssl"


def test_anomaly_with_a_cnn_foundation_backbone(tmp_path, monkeypatch):
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} not found")
    from test_anomaly_cli import write_mvtec

    monkeypatch.chdir(tmp_path)
    write_mvtec(tmp_path / "tile")
    ref = f"torchvision:{WEIGHTS}?origin=keras&image_size=64"
    bank = ss.anomaly_fit(ref, str(tmp_path / "tile"), log=lambda m: None)
    info = json.loads(bank.with_suffix(".json").read_text())
    assert info["encoder"] == "foundation" and info["patchcore"]["backbone"] == "cnn" and info["image_size"] == 64
    assert info["patchcore"]["layers"] == [1, 2]  # the stride-8 and -16 stages, as PatchCore's layer2 + layer3
    recs = ss.anomaly_score(bank, str(tmp_path / "tile"), report=False, log=lambda m: None)
    overall = {r["metric"]: r["mean"] for r in recs if r["defect"] == "all"}
    assert all(r["encoder"] == "foundation" for r in recs) and overall["image_auroc"] > 0.5
