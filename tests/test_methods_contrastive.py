"""SimCLR, DINO, CLIP and SigLIP on tiny data; zero-shot and retrieval evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.evaluate.retrieval import recall_at_k, retrieval
from selfsup.evaluate.zeroshot import zero_shot
from selfsup.methods import METHODS, build_method

VIT = EncoderConfig(name="vit", size="custom", width=32, depth=2, heads=2, patch_size=4)
SPEC = InputSpec(modality="image", channels=3, image_size=16)
TEXT = {"vocab_size": 300, "context_length": 16, "text_width": 32, "text_depth": 1, "text_heads": 2, "embed_dim": 16}
CAPTIONS = [
    "a dog runs on the grass", "two cats sleep on a sofa", "a man rides a red bike", "a child eats ice cream",
    "a boat on a blue lake", "a woman reads a book", "birds fly over the sea", "a car parked in the snow",
]


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (4x4 noise upsampled): two crops of one image look alike."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(small, size=16, mode="bilinear", align_corners=False)


def fixed_views_loss(method, batch: dict) -> float:
    """Loss on the same random augmentations each time (3 fixed seeds), without a gradient."""
    state = torch.get_rng_state()
    total = 0.0
    with torch.no_grad():
        for seed in (101, 102, 103):
            torch.manual_seed(seed)
            total += method(batch)["loss"].item()
    torch.set_rng_state(state)
    return total / 3


def train_steps(method, batch: dict, steps: int, lr: float = 2e-3) -> tuple[float, float]:
    """Train on one fixed batch; the fixed-views loss (before, after). Every loss must be finite."""
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    before = fixed_views_loss(method, batch)
    for step in range(steps):
        out = method(batch)
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if hasattr(method, "on_train_batch_end"):
            method.on_train_batch_end(step + 1, steps)
    return before, fixed_views_loss(method, batch)


def decreased(losses: tuple[float, float]) -> bool:
    before, after = losses
    return math.isfinite(after) and after < before


def test_registry_and_configs():
    for name in ("simclr", "dino", "clip", "siglip"):
        assert name in METHODS
        with pytest.raises(ValidationError):
            METHODS[name].Config(not_an_option=1)
    assert METHODS["siglip"].Config().init_logit_bias == -10.0
    assert math.isclose(METHODS["siglip"].Config().init_logit_scale, math.log(10))
    assert math.isclose(METHODS["clip"].Config().init_logit_scale, math.log(1 / 0.07))


def test_simclr_trains():
    torch.manual_seed(0)
    m = build_method("simclr", {"proj_hidden": 64, "proj_dim": 16, "crop_scale": (0.5, 1.0)}, VIT, SPEC)
    out = m({"image": (images() * 255).to(torch.uint8)})  # uint8 input is accepted too
    assert set(out) >= {"loss", "pos_cosine"} and out["loss"].ndim == 0
    losses = train_steps(m, {"image": images()}, 12)
    assert decreased(losses), losses


def test_simclr_resnet_encoder():
    torch.manual_seed(0)
    m = build_method("simclr", {"proj_hidden": 32, "proj_dim": 8}, EncoderConfig(name="resnet18"), SPEC)
    out = m({"image": images(4)})
    out["loss"].backward()
    assert m.encoder.conv1.weight.grad is not None


def dino(**options):
    opts = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "n_local": 2, **options}
    return build_method("dino", opts, VIT, SPEC)


def test_dino_trains_and_views():
    torch.manual_seed(0)
    m = dino(momentum=0.9, freeze_last_layer=0.0)
    assert m.local_size == 8  # 96/224 of 16, a multiple of the patch size
    losses = train_steps(m, {"image": images()}, 12)
    assert decreased(losses), losses
    assert m.center.abs().sum() > 0  # centre updated from the teacher outputs


def test_dino_ema_moves_teacher_towards_student():
    torch.manual_seed(0)
    m = dino()
    assert all(not p.requires_grad for p in m.teacher_encoder.parameters())
    with torch.no_grad():
        for p in [*m.encoder.parameters(), *m.head.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
    student = [p.clone() for p in [*m.encoder.parameters(), *m.head.parameters()]]
    teacher = [p.clone() for p in [*m.teacher_encoder.parameters(), *m.teacher_head.parameters()]]
    dist_before = sum((s - t).pow(2).sum() for s, t in zip(student, teacher, strict=True))
    m.update_teacher(0.75)
    new = [*m.teacher_encoder.parameters(), *m.teacher_head.parameters()]
    for t_new, t_old, s in zip(new, teacher, student, strict=True):
        assert torch.allclose(t_new, 0.75 * t_old + 0.25 * s, atol=1e-6)
    dist_after = sum((s - t).pow(2).sum() for s, t in zip(student, new, strict=True))
    assert math.isclose(float(dist_after), 0.75**2 * float(dist_before), rel_tol=1e-4)
    # the hook uses the cosine schedule: momentum 1 at the end leaves the teacher alone
    before = [p.clone() for p in m.teacher_encoder.parameters()]
    m.on_train_batch_end(10, 10)
    assert all(torch.equal(a, b) for a, b in zip(before, m.teacher_encoder.parameters(), strict=True))
    assert float(m.progress) == 1.0


def test_dino_freezes_last_layer_then_learns_it():
    torch.manual_seed(0)
    m = dino(freeze_last_layer=0.1)
    m({"image": images(4)})["loss"].backward()
    v = m.head.last_layer.weight_v
    assert v.grad is not None and v.grad.abs().max() == 0
    assert m.head.last_layer.weight_g.grad is None  # norm_last_layer: g is fixed at 1
    assert m.head.mlp[0].weight.grad.abs().max() > 0
    m.zero_grad()
    m.on_train_batch_end(5, 10)
    m({"image": images(4)})["loss"].backward()
    assert v.grad.abs().max() > 0


def test_dino_teacher_temperature_warmup():
    m = dino(warmup_teacher_temp=0.04, teacher_temp=0.07, teacher_temp_warmup=0.5)
    assert math.isclose(m.teacher_temperature(0.0), 0.04)
    assert math.isclose(m.teacher_temperature(0.25), 0.055)
    assert math.isclose(m.teacher_temperature(0.9), 0.07)
    assert math.isclose(m.teacher_temperature(-1.0), 0.07)  # unknown length


def clip_batch() -> dict:
    return {"image": images(), "text": CAPTIONS}


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_image_text_trains(name, tmp_path):
    torch.manual_seed(0)
    m = build_method(name, TEXT, VIT, SPEC)
    samples = [{"image": None, "text": c, "captions": [c, c.upper()]} for c in CAPTIONS]
    m.prepare(samples, tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    losses = train_steps(m, clip_batch(), 10)
    assert decreased(losses), losses
    out = m(clip_batch())
    assert "logit_scale" in out and (name == "clip") == ("logit_bias" not in out)
    assert m.encode_text(["a dog"]).shape == (1, 16)
    assert torch.allclose(m.encode_image(images(3)).norm(dim=1), torch.ones(3))


def test_clip_logit_scale_clamped():
    m = build_method("clip", TEXT, VIT, SPEC)
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert math.isclose(m.scale().item(), 100.0, rel_tol=1e-5)
    m.on_train_batch_end(1, 10)
    assert math.isclose(m.logit_scale.item(), math.log(100), rel_tol=1e-6)


def test_clip_state_dict_round_trip_restores_tokenizer(tmp_path):
    torch.manual_seed(0)
    m = build_method("clip", TEXT, VIT, SPEC)
    m.prepare(CAPTIONS, None)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": m.state_dict()}, path)
    fresh = build_method("clip", TEXT, VIT, SPEC)
    with pytest.raises(RuntimeError):
        fresh.encode_text(["a dog"])
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    assert fresh.tokenizer.to_str() == m.tokenizer.to_str()
    m.eval()
    fresh.eval()
    assert torch.allclose(fresh.encode_text(CAPTIONS), m.encode_text(CAPTIONS))
    # prepare reuses a run's saved tokenizer instead of fitting a new one
    m.tokenizer.save(str(tmp_path / "tokenizer.json"))
    other = build_method("clip", TEXT, VIT, SPEC)
    other.prepare(["completely different words"], tmp_path)
    assert other.tokenizer.to_str() == m.tokenizer.to_str()


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_audio_text_trains(name):
    torch.manual_seed(0)
    spec = InputSpec(modality="audio_text", channels=1, image_size=16, sample_rate=8000)
    m = build_method(name, {**TEXT, "clip_seconds": 0.5}, VIT, spec)
    words = ["zero", "one", "two", "three"]
    m.prepare(words * 3, None)
    t = torch.arange(4000) / 8000
    waves = torch.stack([torch.sin(2 * math.pi * f * t) for f in (300, 700, 1500, 3000)])
    batch = {"audio": waves, "audio_length": torch.full((4,), 4000), "text": words}
    assert m.encoder.in_chans == 1
    losses = train_steps(m, batch, 10)
    assert decreased(losses), losses
    assert m.encode_audio([waves[0], waves[1, :1000]]).shape == (2, 16)
    recs = zero_shot(m, waves, [0, 1, 2, 3], words, task="tones")
    assert recs[0]["protocol"] == "zero-shot" and recs[0]["metric"] == "top1" and 0 <= recs[0]["mean"] <= 1


# --- evaluation ----------------------------------------------------------------------------------


class OneHot(torch.nn.Module):
    """A stand-in text-aligned model: inputs are class indices, texts name their class by its word."""

    words = ["cat", "dog", "car"]

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, texts):
        rows = [[float(w in t) for w in self.words] for t in texts]
        return torch.nn.functional.normalize(torch.tensor(rows) + 1e-3, dim=-1)

    def encode_image(self, x):
        return torch.nn.functional.one_hot(torch.as_tensor(x).long().flatten(), 3).float()


def test_zero_shot_on_a_known_model():
    model = OneHot()
    recs = zero_shot(model, torch.tensor([0, 1, 2, 2]), [0, 1, 2, 1], ["cat", "dog", "car"], task="toy")
    assert len(recs) == 1  # top5 only with more than 5 classes
    r = recs[0]
    assert (r["task"], r["protocol"], r["encoder"], r["metric"]) == ("toy", "zero-shot", "ssl", "top1")
    assert r["mean"] == 0.75 and r["n_seeds"] == 1


def test_recall_at_k_several_captions_per_image():
    # 3 images, captions of image i are columns with caption_image == i
    caption_image = torch.tensor([0, 0, 1, 1, 2])
    sim = torch.tensor([
        [0.9, 0.1, 0.8, 0.0, 0.0],  # image 0: own caption ranks 1st
        [0.9, 0.2, 0.1, 0.3, 0.0],  # image 1: best own (0.3) ranks 2nd
        [0.9, 0.8, 0.7, 0.6, 0.5],  # image 2: own caption ranks 5th
    ])
    r = recall_at_k(sim, caption_image, ks=(1, 2, 5))
    assert r["R@1_image_to_text"] == pytest.approx(1 / 3)
    assert r["R@2_image_to_text"] == pytest.approx(2 / 3)
    assert r["R@5_image_to_text"] == pytest.approx(1.0)
    # text -> image: caption columns ranked over images; caption 0 -> image 0 ties with 1 and 2 at 0.9
    # (a three-way tie: first with chance 1/3, in the top 2 with chance 2/3), caption 1 -> 0.1 is last
    # of 3, caption 2 -> 0.1 is last, caption 3 -> 0.3 second, caption 4 -> 0.5 first
    assert r["R@1_text_to_image"] == pytest.approx((1 / 3 + 1) / 5)
    assert r["R@2_text_to_image"] == pytest.approx((2 / 3 + 1 + 1) / 5)


def test_retrieval_records():
    model = OneHot()
    caps = [["a cat", "one cat sitting"], ["a dog"], ["a red car", "car", "the car"]]
    recs = retrieval(model, torch.tensor([0, 1, 2]), caps, task="toy")
    metrics = {r["metric"]: r["mean"] for r in recs}
    assert set(metrics) == {f"R@{k}_{d}" for k in (1, 5, 10) for d in ("image_to_text", "text_to_image")}
    assert all(v == 1.0 for v in metrics.values())
    assert all(r["protocol"] == "retrieval" and r["n_captions"] == 6 for r in recs)
