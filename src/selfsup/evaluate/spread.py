"""Encoding a data set over several processes (``--devices N``), rows in the input order.

``embed_source`` reads a source in batches (never the whole set in memory at once), encodes each
batch on the encoder's device and returns features, labels and keys in the source's order. Under
a process group (``torch.distributed``: processes started by ``spawn_local`` for ``--devices N``
on one machine, or by torchrun / srun across machines) each rank encodes only its part, a
contiguous block of an indexed source (``distributed.shard_range``) or every world-th batch of a
stream, and the parts are gathered back in order on every rank: the result equals one process's
up to float rounding. The gloo backend serves the CPU, NCCL the GPUs (rank r on ``cuda:r``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from copy import deepcopy
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset

from selfsup import distributed
from selfsup.data.spec import as_tensor
from selfsup.encoders.inference import module_device, progress_ticker
from selfsup.evaluate.features import extract_features, sharded_features


def embed_source(encoder: nn.Module, src: Any, batch_fn: Callable[[dict], Any], *, batch_size: int = 256,
                 max_samples: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every readable sample of ``src`` (a ``data.sources`` Source), at most ``max_samples``, encoded:
    {"features" (N, F) float32, "labels" (N,) int64, "keys" list of N str, "skipped" the skip entries
    ("KEY: REASON") of the batches read}, in the source's order.

    ``batch_fn`` turns a collated batch into the encoder's input (``InputSpec.batch_input``). An
    indexed source reads its first ``max_samples`` samples (unreadable ones left out); a stream its
    first ``max_samples`` readable ones. Under a process group each rank encodes its share only
    (module docstring) and every rank returns the whole result.
    """
    from selfsup.data.sources.base import collate

    rank, world = distributed.global_rank(), distributed.world_size()
    ds = src.dataset(ranks=(0, 1))  # every process sees the whole set; the split below is by rows or batches
    indexed = not isinstance(ds, IterableDataset)
    total = None
    if indexed:
        total = len(ds) if max_samples is None else min(len(ds), max_samples)
        block = distributed.shard_range(total, rank, world)
        ds = Subset(ds, list(block))
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=partial(collate, spec=src.spec))
    parts, seen, tick = [], 0, progress_ticker(log if rank == 0 else None)
    for i, batch in enumerate(loader):
        if not indexed and max_samples is not None and seen >= max_samples:
            break
        seen += len(batch["key"])
        if indexed or i % world == rank:
            feats = extract_features(encoder, batch_fn(batch), batch_size=batch_size)
            parts.append(((rank, i) if indexed else (0, i), feats, batch["label"].long(), list(batch["key"]),
                          list(batch.get("skipped", []))))
        tick(seen * (world if indexed else 1), total)
    parts = sorted((p for rank_parts in distributed.all_gather_objects(parts) for p in rank_parts), key=lambda p: p[0])
    if not parts:
        return {"features": torch.empty(0, getattr(encoder, "num_features", 0)), "labels": torch.empty(0).long(),
                "keys": [], "skipped": []}
    out = {"features": torch.cat([p[1] for p in parts]), "labels": torch.cat([p[2] for p in parts]),
           "keys": [k for p in parts for k in p[3]], "skipped": [s for p in parts for s in p[4]]}
    if max_samples is not None:
        out = {"features": out["features"][:max_samples], "labels": out["labels"][:max_samples],
               "keys": out["keys"][:max_samples], "skipped": out["skipped"]}
    return out


def _features_job(device: str, encoder: nn.Module, images: Any, batch_size: int) -> dict:
    """One rank of ``spread_features``: its block encoded on ``device``, all blocks gathered in order."""
    return {"features": sharded_features(encoder.to(device), images, batch_size, device)}


def spread_features(encoder: nn.Module, images: Any, devices: int = 1, batch_size: int = 256,
                    device: str | torch.device | None = None) -> torch.Tensor:
    """``extract_features`` of in-memory inputs (N, ...) -> (N, F) float32 on the CPU, with ``devices`` local
    processes each encoding a contiguous block (``spawn_local``; gloo on the CPU, NCCL on GPUs), in order.
    One device, or a process that already is a rank of a group: ``features.sharded_features`` here."""
    device = str(device if device is not None else module_device(encoder))
    if distributed.is_initialized():
        return sharded_features(encoder, images, batch_size, device)
    if devices <= 1:
        return extract_features(encoder, images, batch_size, device)
    copy = deepcopy(encoder).cpu()  # the caller's encoder stays where it is
    return spawn_local(_features_job, devices, copy, as_tensor(images), batch_size, device=device)["features"]


def _worker(rank: int, world: int, folder: str, fn: Callable[..., dict], args: tuple, cuda: bool) -> None:
    """One of ``spawn_local``'s processes: join the group, run ``fn(device, *args)``, rank 0 saves the result."""
    if cuda:
        torch.cuda.set_device(rank)
    else:  # the machine's cores shared out, so N processes do not oversubscribe them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world)
    try:
        result = fn(f"cuda:{rank}" if cuda else "cpu", *args)
        if rank == 0:
            torch.save(result, f"{folder}/result.pt")
    finally:
        dist.destroy_process_group()


def spawn_local(fn: Callable[..., dict], devices: int, *args: Any, device: str = "cpu") -> dict:
    """``fn(device, *args)`` in ``devices`` new local processes joined in one process group (gloo on the
    CPU, NCCL when ``device`` is CUDA: process r on GPU r); returns rank 0's result (a dict of tensors,
    lists and numbers). ``fn`` must be a module-level function (processes start with spawn)."""
    cuda = torch.device(device).type == "cuda"
    if cuda and devices > torch.cuda.device_count():
        raise ValueError(f"--devices {devices}: only {torch.cuda.device_count()} CUDA device(s) here")
    with tempfile.TemporaryDirectory(prefix="selfsup-spread-") as folder:
        mp.spawn(_worker, args=(devices, folder, fn, args, cuda), nprocs=devices, join=True)
        return torch.load(Path(folder) / "result.pt", map_location="cpu", weights_only=True)


__all__ = ["embed_source", "spawn_local", "spread_features"]
