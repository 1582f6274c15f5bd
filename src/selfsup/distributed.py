"""Which process am I, and the few collectives the engine, the data readers, the contrastive losses
and evaluation need besides DDP's own. The one home of the rank rule: every layer asks here.

Under torchrun or SLURM every process runs the same command and Lightning creates the process
group inside ``Trainer.fit``. Before that (run folder, config file, DataLoader workers started
with spawn) the rank comes from the launcher's environment: RANK / WORLD_SIZE (torchrun,
Lightning's own launcher) or SLURM_PROCID / SLURM_NTASKS (srun). Every helper is the identity on
a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def launched_world_size() -> int:
    """Processes the launcher started (before any process group exists); 1 when not launched."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def global_rank() -> int:
    if is_initialized():
        return dist.get_rank()
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else launched_world_size()


def is_global_zero() -> bool:
    """Rank 0, also in the processes Lightning's own launcher starts (they get only LOCAL_RANK, NODE_RANK)."""
    if is_initialized() or any(os.environ.get(k, "").isdigit() for k in ("RANK", "SLURM_PROCID")):
        return global_rank() == 0
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK"))


def multi_process(strategy: str = "auto", devices: int | str = "auto", num_nodes: int = 1) -> bool:
    """Whether this run has (or will launch) more than one process."""
    if launched_world_size() > 1 or num_nodes > 1:
        return True
    spread = strategy.startswith(("ddp", "fsdp", "deepspeed"))
    return spread and str(devices) not in ("1", "auto")


def sum_over_ranks(x: float) -> float:
    """Sum of a Python number over ranks (a collective: every rank must call it)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return x
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x)
    return type(x)(sum(parts))


def from_rank_zero(x: float, device: torch.device | str = "cpu") -> float:
    """Rank 0's value of a float on every rank (a collective: every rank must call it)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a collective); ``[obj]`` on one process."""
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def shard_range(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``; blocks differ in length by at most one."""
    return range(n * rank // world, n * (rank + 1) // world)


def gather_in_order(local: torch.Tensor, n: int) -> torch.Tensor:
    """Each rank's block (``shard_range(n, rank, world)`` rows of ``local``) -> all n rows in order.

    ``all_gather`` needs one shape on every rank, so blocks are padded to the longest and cut back.
    The result is on ``local``'s device (CUDA for NCCL, CPU for gloo) on every rank.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return local
    world, longest = dist.get_world_size(), -(-n // dist.get_world_size())
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: len(shard_range(n, r, world))] for r, p in enumerate(parts)])
