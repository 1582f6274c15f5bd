"""Cross-process gathering for contrastive losses, with the gradient each rank needs.

Under DDP every rank holds a slice of the global batch, and a contrastive loss wants the other
ranks' embeddings as negatives. ``gather_with_grad`` concatenates all slices, and its backward
sums the incoming gradients over ranks and hands each rank the part for its own slice: all
ranks' losses depend on rank r's embeddings, so rank r must get all of those contributions.

The rule that makes DDP's gradient averaging come out right: if rank r computes the loss of its
*local* anchors only (their mean) against the gathered candidates, then sum_r L_r = W * L, where
L is the loss of the whole global batch on one process and W the world size. With the summed
backward above, each rank's parameter gradient is d(sum_r L_r)/d(its params), and DDP's average
over ranks gives (1 / W) d(W L) = dL: the single-process gradient. (Dividing again by W, or not
summing in backward, are the two 1/world_size bugs lightly had; ``tests/test_gather_ddp.py``
checks the gradients of 2 gloo processes against 1.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from selfsup import distributed


def is_distributed() -> bool:
    """More than one process in an initialised process group: only then is there anything to gather."""
    return distributed.is_initialized() and distributed.world_size() > 1


def gather_offset(n: int) -> int:
    """Row of this rank's first item in a ``gather_with_grad`` result of n items per rank: rank * n."""
    return distributed.global_rank() * n if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.n
        return grad[start : start + ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each of W ranks -> (W n, ...) in rank order; gradients flow back to every slice.

    All ranks must pass the same n. Identity when not distributed.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (no gradient); identity when not distributed."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


__all__ = ["gather_with_grad", "gather_offset", "all_reduce_mean", "is_distributed"]
