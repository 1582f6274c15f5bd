"""Tables ({"features" (B, F), "categories" (B, K)}): SCARF's random feature corruption as the view.

A view replaces a random ``CORRUPTION_RATE`` share of each row's columns by the values those
columns have in other random rows of the batch (draws from the columns' empirical marginals;
Bahri et al. 2022). ``methods.scarf`` is this corruption with its own loss and the training
table's marginals.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.modalities import DataType, register

CORRUPTION_RATE = 0.6  # SCARF's default


def corrupt(
    x_num: torch.Tensor,
    x_cat: torch.Tensor,
    rate: float,
    pool_num: torch.Tensor,
    pool_cat: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCARF corruption: in each row replace round(rate * M) of its M = F + K columns, chosen at
    random, by that column's value in a random row of the pool (N_pool, F) / (N_pool, K).

    Returns the corrupted (B, F), (B, K) and the mask (B, F + K) of replaced columns.
    """
    B, Fn = x_num.shape
    M = Fn + x_cat.shape[1]
    q = int(round(rate * M))
    rank = torch.rand(B, M, device=x_num.device, generator=generator).argsort(1).argsort(1)
    chosen = rank < q  # exactly q columns per row
    rows = torch.randint(0, len(pool_num), (B, M), device=x_num.device, generator=generator)
    cols = torch.arange(M, device=x_num.device).expand(B, M)
    new_num = pool_num[rows[:, :Fn], cols[:, :Fn]] if Fn else x_num
    new_cat = pool_cat[rows[:, Fn:], cols[:, Fn:] - Fn] if M > Fn else x_cat
    return (torch.where(chosen[:, :Fn], new_num, x_num), torch.where(chosen[:, Fn:], new_cat, x_cat), chosen)


class Table(DataType):
    name = "table"

    def views(self, x: dict, count: int, encoder: nn.Module) -> list[dict]:
        """``count`` SCARF-corrupted copies of the rows, marginals from the batch."""
        x_num = x["features"]
        x_cat = x.get("categories")
        if x_cat is None:
            x_cat = x_num.new_zeros(len(x_num), 0, dtype=torch.long)
        out = []
        for _ in range(count):
            c_num, c_cat, _ = corrupt(x_num, x_cat, CORRUPTION_RATE, x_num, x_cat)
            out.append({"features": c_num, "categories": c_cat})
        return out


register(Table())
