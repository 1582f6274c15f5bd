"""FT-Transformer (Gorishniy et al. 2021, "Revisiting Deep Learning Models for Tabular Data").

Every column becomes a token: numeric feature j with value x_j gives ``x_j * W_j + b_j`` (a learned
vector per feature, scaled by the value, plus a learned bias per feature); categorical column k
with category c gives ``E_k[c] + b_k`` (an embedding table per column). A CLS token goes in front
and the tokens run through the same transformer ``Block`` stack as the ViT. A missing numeric
value (NaN) gets a learned per-feature "missing" token instead of ``x_j * W_j + b_j``; a missing or
unseen category is category 0, which has its own embedding like any other (an index outside a
column's vocabulary is read as 0 too).

Parameter names follow the ViT (``cls_token``, ``blocks.{i}...``, ``norm``) so the transformer part
of a table encoder reads like any other; the tokenizer lives under ``tokenizer``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.encoders.trunk import MaskedTokens, Trunk, gather_tokens, init_weights, make_blocks


class FeatureTokenizer(nn.Module):
    """(B, F) numbers (NaN = missing) + (B, K) category indices -> tokens (B, F + K, D)."""

    def __init__(self, num_features: int, cardinalities: list[int], dim: int):
        super().__init__()
        self.num_features, self.cardinalities = num_features, list(cardinalities)
        F, K = num_features, len(self.cardinalities)
        self.weight = nn.Parameter(torch.empty(F, dim))
        self.bias = nn.Parameter(torch.empty(F, dim))
        self.missing = nn.Parameter(torch.empty(F, dim))
        self.cat_embed = nn.Embedding(max(sum(self.cardinalities), 1), dim)
        self.cat_bias = nn.Parameter(torch.empty(K, dim))
        offsets = torch.tensor([0, *self.cardinalities[:-1]], dtype=torch.long).cumsum(0) if K else torch.zeros(0)
        self.register_buffer("cat_offsets", offsets.long(), persistent=False)
        self.register_buffer("cat_sizes", torch.tensor(self.cardinalities, dtype=torch.long), persistent=False)
        # the paper's "uniform" token initialisation: U(-1/sqrt(d), 1/sqrt(d))
        bound = 1.0 / math.sqrt(dim)
        for p in (self.weight, self.bias, self.missing, self.cat_embed.weight, self.cat_bias):
            nn.init.uniform_(p, -bound, bound)

    @property
    def num_tokens(self) -> int:
        return self.num_features + len(self.cardinalities)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        tokens = []
        if self.num_features:
            missing = torch.isnan(x_num).unsqueeze(-1)
            t = torch.nan_to_num(x_num, nan=0.0).unsqueeze(-1) * self.weight + self.bias
            tokens.append(torch.where(missing, self.missing.to(t.dtype), t))
        if self.cardinalities:
            if x_cat is None:
                raise ValueError(f"this table encoder needs {len(self.cardinalities)} categorical columns")
            x_cat = x_cat.long()
            x_cat = torch.where((x_cat < 0) | (x_cat >= self.cat_sizes), 0, x_cat)  # outside the vocabulary: unseen
            tokens.append(self.cat_embed(x_cat + self.cat_offsets) + self.cat_bias)
        return torch.cat(tokens, dim=1)


def masked_feature_loss(
    num_pred: torch.Tensor,
    num_target: torch.Tensor,
    cat_logits: list[torch.Tensor],
    cat_target: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss over hidden cells with a known value, and the per-cell errors.

    num_pred / num_target (B, F) (target NaN = missing), cat_logits K tensors (B, card_k),
    cat_target (B, K) (0 = missing), mask (B, F + K) with 1 = hidden, numeric columns first.
    Returns (sum of squared errors + cross-entropies) / (number of counted cells), and the errors
    (B, F + K) with NaN where a cell is not counted (visible or unknown).
    """
    Fn = num_target.shape[1]
    known_num = ~torch.isnan(num_target)
    err_num = (num_pred - torch.nan_to_num(num_target)) ** 2
    errs = [torch.where(known_num & (mask[:, :Fn] > 0), err_num, torch.full_like(err_num, float("nan")))]
    for k, logits in enumerate(cat_logits):
        t = cat_target[:, k].long()
        ce = F.cross_entropy(logits, t, reduction="none")
        counted = (t > 0) & (mask[:, Fn + k] > 0)
        errs.append(torch.where(counted, ce, torch.full_like(ce, float("nan"))).unsqueeze(1))
    errors = torch.cat(errs, dim=1)
    counted = ~torch.isnan(errors)
    loss = torch.where(counted, errors, torch.zeros_like(errors)).sum() / counted.sum().clamp(min=1)
    return loss, errors


class ColumnHead(nn.Module):
    """Decoder tokens (B, F + K, d) -> a number per numeric column (one linear map each) and logits over
    each categorical column's categories: ``(num_pred (B, F), [logits (B, card_k)] * K)``."""

    def __init__(self, width: int, num_numeric: int, cardinalities: list[int]):
        super().__init__()
        self.num_numeric = num_numeric
        self.num_head_weight = nn.Parameter(torch.zeros(num_numeric, width))
        self.num_head_bias = nn.Parameter(torch.zeros(num_numeric))
        self.cat_heads = nn.ModuleList(nn.Linear(width, c) for c in cardinalities)
        nn.init.xavier_uniform_(self.num_head_weight)
        init_weights(self.cat_heads)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        Fn = self.num_numeric
        num_pred = (h[:, :Fn] * self.num_head_weight).sum(-1) + self.num_head_bias
        return num_pred, [head(h[:, Fn + k]) for k, head in enumerate(self.cat_heads)]


class FTTransformer(Trunk):
    """Feature tokenizer + CLS + the trunk's blocks. ``forward`` gives pooled features (B, num_features).

    ``pool``: "token" (CLS, as in the paper), "avg" (mean of the feature tokens) or "token+avg".
    """

    modality = "table"  # what it reads: ``encoders.to_input`` passes such inputs through

    def __init__(
        self,
        num_features: int,
        cardinalities: list[int] | None = None,
        embed_dim: int = 192,
        depth: int = 3,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        pool: str = "token",
    ):
        super().__init__()
        cardinalities = list(cardinalities or [])
        if num_features + len(cardinalities) == 0:
            raise ValueError("a table encoder needs at least one numeric or categorical column")
        if pool not in ("token", "avg", "token+avg"):
            raise ValueError(f"unknown pool {pool!r}; use token, avg or token+avg")
        self.embed_dim, self.depth, self.num_heads, self.pool = embed_dim, depth, num_heads, pool
        self.tokenizer = FeatureTokenizer(num_features, cardinalities, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.reg_token = self.attn_pool = None
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim * (2 if pool == "token+avg" else 1)
        nn.init.normal_(self.cls_token, std=0.02)
        init_weights(self.blocks.modules())

    @property
    def num_tokens(self) -> int:
        """Tokens per row without the CLS token: F + K."""
        return self.tokenizer.num_tokens

    @staticmethod
    def _inputs(x, x_cat):
        if isinstance(x, dict):  # a batch
            return x["features"], x.get("categories")
        return x, x_cat

    def embed(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F), (B, K) -> feature tokens (B, F + K, D), numeric columns first."""
        return self.tokenizer(x_num, x_cat)

    def tokenize(self, x) -> torch.Tensor:
        """(B, F) numbers or a batch dict -> feature tokens (B, F + K, D)."""
        return self.embed(*self._inputs(x, None))

    def forward_features(self, x, x_cat: torch.Tensor | None = None, keep: torch.Tensor | None = None):
        """(B, F) numbers and (B, K) categories (or a batch dict) -> normed tokens (B, 1 + F + K, D), CLS first."""
        x_num, x_cat = self._inputs(x, x_cat)
        return self.forward_tokens(self.embed(x_num, x_cat), keep)

    def forward(self, x, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F) numbers and (B, K) categories, or a batch dict -> pooled features (B, num_features)."""
        return self.forward_head(self.forward_features(x, x_cat))

    def extra_no_weight_decay(self) -> set[str]:
        """The paper keeps weight decay off the tokenizer, norms and biases."""
        return {f"tokenizer.{n}" for n, _ in self.tokenizer.named_parameters()}

    # -- masked modelling (``trunk.Maskable``): hide 30 % of a row's cells (VIME's probability), predict
    # numbers (squared error, standardised) and categories (cross-entropy), as MET does
    mask_ratio = 0.3

    def token_shape(self, x) -> tuple[int, int]:
        return self._inputs(x, None)[0].shape[0], self.num_tokens

    def masked_tokens(self, x, keep: torch.Tensor) -> MaskedTokens:
        """A batch dict -> the ``keep`` feature tokens (B, n, D) and per-cell targets (B, F + K, 1): the
        number (NaN = missing) or the category index (0 = missing) as a float."""
        x_num, x_cat = self._inputs(x, None)
        if x_cat is None:
            x_cat = x_num.new_zeros(x_num.shape[0], 0, dtype=torch.long)
        target = torch.cat([x_num.float(), x_cat.float()], dim=1).unsqueeze(-1)
        return MaskedTokens(gather_tokens(self.embed(x_num, x_cat), keep), target, (self.num_tokens,))

    def prediction_head(self, width: int) -> nn.Module:
        return ColumnHead(width, self.tokenizer.num_features, self.tokenizer.cardinalities)

    def decoder_pos_param(self, width: int) -> nn.Parameter:
        """Learned decoder positions (1, 1 + F + K, width): a hidden column has no value to say which it is."""
        pos = nn.Parameter(torch.zeros(1, 1 + self.num_tokens, width))
        nn.init.normal_(pos, std=0.02)
        return pos

    def decoder_positions(self, layout: tuple[int, ...], width: int, stored: nn.Parameter) -> torch.Tensor:
        return stored

    def masked_loss(self, pred, target: torch.Tensor, hidden: torch.Tensor,
                    norm_target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``masked_feature_loss`` of the hidden cells (``norm_target`` unused: numbers come standardised)."""
        num_pred, cat_logits = pred
        Fn = self.tokenizer.num_features
        return masked_feature_loss(num_pred, target[:, :Fn, 0], cat_logits, target[:, Fn:, 0].long(), hidden)


__all__ = ["ColumnHead", "FTTransformer", "FeatureTokenizer", "masked_feature_loss"]
