import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.methods import build_method
from selfsup.methods.mae import mae_loss, patchify, random_masking, unpatchify


def tiny_mae(**opts):
    enc = EncoderConfig(size="custom", width=32, depth=2, heads=2, patch_size=4)
    return build_method("mae", {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2, **opts}, enc,
                        InputSpec(channels=3, image_size=16))


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    # second patch = rows 0..3, columns 4..7; pixel (0, 0) channel 1
    assert p[0, 1, 1] == x[0, 1, 0, 4]
    torch.testing.assert_close(unpatchify(p, 4, 3, (2, 3)), x)


def test_random_masking_counts_and_restore():
    g = torch.Generator().manual_seed(0)
    keep, mask, restore = random_masking(4, 16, 0.75, generator=g)
    assert keep.shape == (4, 4) and mask.shape == (4, 16)
    assert (mask.sum(1) == 12).all()
    for b in range(4):
        assert (mask[b, keep[b]] == 0).all()  # kept patches are the visible ones
        assert sorted(restore[b].tolist()) == list(range(16))


def test_loss_only_counts_hidden_patches():
    pred, target = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    target[0, 0] = 5.0  # visible patch: wrong but not counted
    target[0, 2] = 1.0  # hidden patch: error 1 per pixel
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert mae_loss(pred, target, mask, norm_pix=False).item() == 0.5


def test_norm_pix_target_is_per_patch_standardised():
    target = torch.tensor([[[1.0, 2.0, 3.0]]])
    z = (target - 2.0) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    loss = mae_loss(z, target, torch.ones(1, 1), norm_pix=True)
    assert loss.item() < 1e-8


def test_forward_backward_and_learning():
    torch.manual_seed(0)
    model = tiny_mae(augment="none", norm_pix_loss=False)
    # one colour per image: hidden patches are predictable from the visible ones
    batch = {"image": torch.rand(8, 3, 1, 1).expand(8, 3, 16, 16).contiguous()}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch)
        assert out["pred"].shape == (8, 16, 48) and out["mask"].shape == (8, 16)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.3 * losses[0]
    enc_grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in enc_grads)


def test_reconstruct_outputs_images():
    model = tiny_mae().eval()
    images = torch.rand(2, 3, 16, 16)
    out = model.reconstruct(images)
    for k in ("masked", "reconstruction", "pasted"):
        assert out[k].shape == images.shape and 0 <= out[k].min() and out[k].max() <= 1
    visible = out["masked"] > 0
    torch.testing.assert_close(out["pasted"][visible], images[visible])
