"""Gradients of the gathered contrastive losses under 2-process DDP equal those of 1 process.

Two CPU processes (gloo) each take half of a global batch, compute the loss with negatives
gathered by ``gather_with_grad``, back-propagate, and average the parameter gradients over ranks
as DDP does (all-reduce, divide by the world size). Those must equal the gradients of a single
process on the whole global batch: the check that catches the 1/world_size bugs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.methods.clip import clip_loss, siglip_loss
from selfsup.methods.gather import all_reduce_mean, gather_with_grad
from selfsup.methods.simclr import nt_xent_loss

WORLD, N = 2, 4  # processes, samples per process
CAPTIONS = ["a dog on grass", "a cat on a sofa", "a red car", "a boat on a lake",
            "two birds fly", "a man reads", "a child runs", "snow on a hill"]


class Towers(nn.Module):
    """Two linear "encoders" and the learnable temperature / bias of the losses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 5).double()
        self.b = nn.Linear(7, 5).double()
        self.scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = WORLD * N
    return (torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randn(n, 6, generator=g, dtype=torch.float64),
            torch.randn(n, 7, generator=g, dtype=torch.float64))


def losses(m: Towers, x1, x2, y, gather: bool) -> dict[str, torch.Tensor]:
    norm = nn.functional.normalize
    img, txt = norm(m.a(x1), dim=1), norm(m.b(y), dim=1)
    return {
        "simclr": nt_xent_loss(m.a(x1), m.a(x2), 0.3, gather=gather),
        "clip": clip_loss(img, txt, m.scale.exp(), gather=gather),
        "siglip": siglip_loss(img, txt, m.scale.exp(), m.bias, gather=gather),
    }


def buggy_gather(x: torch.Tensor) -> torch.Tensor:
    """The common mistake: all_gather without gradient, the local slice put back with its own."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def tiny_clip(name: str):
    from selfsup.data.spec import InputSpec
    from selfsup.encoders import EncoderConfig
    from selfsup.methods import build_method

    torch.manual_seed(0)
    enc = EncoderConfig(size="custom", width=16, depth=1, heads=2, patch_size=4)
    opts = {"vocab_size": 300, "context_length": 12, "text_width": 16, "text_depth": 1, "text_heads": 2,
            "embed_dim": 8, "crop_scale": (1.0, 1.0)}
    m = build_method(name, opts, enc, InputSpec(image_size=8)).double()
    m.prepare(CAPTIONS, None)
    return m


def clip_images() -> torch.Tensor:
    return torch.rand(WORLD * N, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def ddp_average(model: nn.Module) -> None:
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        x1, x2, y = (t[rank * N : (rank + 1) * N] for t in global_batch())
        out: dict = {}
        for name in ("simclr", "clip", "siglip"):
            m = Towers()
            losses(m, x1, x2, y, gather=True)[name].backward()
            ddp_average(m)
            out[name] = grads(m)
        # the same with the buggy gather must not match (the test can see the bug)
        import selfsup.methods.simclr as simclr_module

        simclr_module.gather_with_grad = buggy_gather
        m = Towers()
        losses(m, x1, x2, y, gather=True)["simclr"].backward()
        ddp_average(m)
        out["simclr_buggy"] = grads(m)
        simclr_module.gather_with_grad = gather_with_grad
        # the methods end to end (no augmentation): CLIP and SigLIP with their own gather
        for name in ("clip", "siglip"):
            m = tiny_clip(name)
            local = slice(rank * N, (rank + 1) * N)
            m({"image": clip_images()[local], "text": CAPTIONS[local]})["loss"].backward()
            ddp_average(m)
            out[f"method_{name}"] = grads(m)
        out["mean"] = all_reduce_mean(torch.tensor([float(rank)]))
        if rank == 0:
            torch.save(out, os.path.join(folder, "grads.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gradients_equal_one_process(tmp_path: Path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "grads.pt", weights_only=True)
    x1, x2, y = global_batch()
    for name in ("simclr", "clip", "siglip"):
        m = Towers()
        losses(m, x1, x2, y, gather=False)[name].backward()
        single = grads(m)
        assert set(single) == set(ddp[name])
        for k, g in single.items():
            assert torch.allclose(ddp[name][k], g, atol=1e-5, rtol=0), (name, k)
    m = Towers()
    losses(m, x1, x2, y, gather=False)["simclr"].backward()
    assert not torch.allclose(ddp["simclr_buggy"]["a.weight"], m.a.weight.grad, atol=1e-5)
    for name in ("clip", "siglip"):
        m = tiny_clip(name)
        m({"image": clip_images(), "text": CAPTIONS})["loss"].backward()
        single = grads(m)
        assert set(single) == set(ddp[f"method_{name}"]) and len(single) > 10
        for k, g in single.items():
            assert torch.allclose(ddp[f"method_{name}"][k], g, atol=1e-5, rtol=0), (name, k)
    assert ddp["mean"].item() == 0.5
