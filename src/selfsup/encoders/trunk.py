"""The one transformer trunk every selfsup encoder is: prefix tokens, blocks, final norm, pooling.

What differs between data types is only how an input becomes tokens (the tokenizer: image patches,
table feature tokens, series patches); what happens to the tokens is written here once: the
drop-path schedule, the weight init, the [CLS, registers] prefix, running the blocks on all tokens,
on a kept subset (MAE's visible tokens) or on sequences of different lengths, pooling, the
intermediate outputs dense heads read, the parameters without weight decay and the layer of each
parameter for layer-wise learning-rate decay.

Encoders subclass ``Trunk`` (no wrapper module), so their parameter names stay timm's flat ones:
``cls_token``, ``reg_token``, ``pos_embed``, ``norm_pre``, ``blocks.{i}.*``, ``norm``, ``fc_norm``,
``attn_pool``, ``head``. A subclass builds its tokenizer, then calls ``make_blocks`` and sets
``norm``; ``tokenize(x)`` (input -> positioned tokens (B, N, D)) is the one method it must supply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from selfsup.encoders.layers import Block
from selfsup.encoders.levels import take_indices

POOLS = ("token", "avg", "token+avg", "map")
TOP = ("norm.", "fc_norm", "attn_pool", "head")  # parameters above the blocks (layer-wise decay's top layer)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to ``rate`` at the last."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def make_blocks(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                **block_options) -> nn.ModuleList:
    """``depth`` pre-norm blocks with the drop-path schedule; ``block_options`` go to ``Block``."""
    rates = drop_path_rates(drop_path_rate, depth)
    return nn.ModuleList(Block(dim, heads, mlp_ratio, r, **block_options) for r in rates)


def init_weights(modules: Iterable[nn.Module]) -> None:
    """The init every transformer here uses: xavier-uniform linear weights, zero biases, unit LayerNorms."""
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_pool(pool: str, class_token: bool) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; use token, avg, token+avg or map")
    if "token" in pool and not class_token:
        raise ValueError(f"pool {pool!r} needs a class token")


class MaskedTokens(NamedTuple):
    """What masked modelling needs from a tokenizer for one batch.

    ``tokens`` (B', n, D): the encoder's input tokens with positions, only the kept ones (B' = B, or
    B * C for series);
    ``target`` (B', N, T): what the decoder predicts at each token (NaN / 0-category where unknown);
    ``layout``: the token layout the decoder positions follow ((gh, gw) for images, (N,) otherwise).
    """

    tokens: torch.Tensor
    target: torch.Tensor
    layout: tuple[int, ...]


@runtime_checkable
class Maskable(Protocol):
    """A tokenizer that masked modelling (``methods.mae``) can train: it gives the tokens and targets of
    a batch, the head from decoder width to a token's prediction, the decoder's positions and the loss.
    Every selfsup transformer encoder is one (image patches, table features, series patches)."""

    mask_ratio: float  # the share of tokens hidden by default for this data type

    def token_shape(self, x: Any) -> tuple[int, int]: ...

    def masked_tokens(self, x: Any, keep: torch.Tensor) -> MaskedTokens: ...

    def prediction_head(self, width: int) -> nn.Module: ...

    def decoder_pos_param(self, width: int) -> nn.Parameter | None: ...

    def decoder_positions(self, layout: tuple[int, ...], width: int, stored: nn.Parameter | None) -> torch.Tensor: ...

    def masked_loss(self, pred: Any, target: torch.Tensor, hidden: torch.Tensor,
                    norm_target: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...


def gather_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Tokens (B, N, D) -> the ``keep`` (B, n) of them (B, n, D)."""
    return torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def sincos_1d(n: int, dim: int, device=None) -> torch.Tensor:
    """Fixed sine-cosine position embedding (1, n, dim) as in Vaswani et al. 2017."""
    pos = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=device) / (dim / 2.0))
    emb = torch.cat([torch.sin(pos * omega), torch.cos(pos * omega)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(n, 1, dtype=emb.dtype, device=device)], dim=1)
    return emb.float().unsqueeze(0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of hidden tokens' known values: pred / target (B, N, T) (target NaN = unknown),
    hidden (B, N) with 1 = hidden. Returns (sum of squared errors / number of counted values, the
    per-token mean squared error (B, N), NaN for a token that is visible or has no known value)."""
    counted = (hidden.unsqueeze(-1) > 0) & ~torch.isnan(target)
    se = torch.where(counted, (pred - torch.nan_to_num(target)) ** 2, torch.zeros_like(pred))
    n = counted.sum(-1)
    errors = torch.where(n > 0, se.sum(-1) / n.clamp(min=1), torch.full_like(se[..., 0], float("nan")))
    return se.sum() / counted.sum().clamp(min=1), errors


class Trunk(nn.Module):
    """Tokens -> [prefix, tokens] -> blocks -> norm -> pooled features (B, num_features).

    Subclasses set ``embed_dim``, ``depth``, ``pool``, ``blocks``, ``norm`` and optionally
    ``cls_token`` / ``reg_token`` (1, P, D) and ``attn_pool`` (each possibly None), and optionally
    ``pos_embed`` with ``num_pos_prefix`` rows for the prefix, ``norm_pre``, ``fc_norm`` and ``head``.
    """

    # set by every subclass, None where it has none (a class-level None would hide the registered parameter)
    cls_token: nn.Parameter | None
    reg_token: nn.Parameter | None
    attn_pool: nn.Module | None
    num_pos_prefix = 0  # rows of ``pos_embed`` that belong to the prefix tokens
    embed_dim: int
    depth: int
    pool: str = "token"
    blocks: nn.ModuleList
    norm: nn.Module

    # -- what a subclass supplies
    def tokenize(self, x) -> torch.Tensor:
        """The input -> tokens with their positions (B', N, D), no prefix tokens."""
        raise NotImplementedError

    def format_intermediate(self, tokens: torch.Tensor, x, output_fmt: str) -> torch.Tensor:
        """Intermediate tokens (B', N, D) in ``output_fmt``; the trunk knows only "NLC"."""
        if output_fmt != "NLC":
            raise ValueError(f"{type(self).__name__} gives intermediates as NLC, not {output_fmt!r}")
        return tokens

    # -- the trunk
    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the data tokens: the class token and the registers."""
        return int(self.cls_token is not None) + (self.reg_token.shape[1] if self.reg_token is not None else 0)

    def prefix_tokens(self, batch: int) -> torch.Tensor | None:
        """[CLS, registers] with their position embedding (when ``num_pos_prefix``), (B, P, D), or None."""
        parts = [t for t in (self.cls_token, self.reg_token) if t is not None]
        if not parts:
            return None
        prefix = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.num_pos_prefix:
            prefix = prefix + self.pos_embed[:, : self.num_pos_prefix]
        return prefix.expand(batch, -1, -1)

    def with_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, n, D) -> the blocks' input (B, P + n, D): prefix tokens first, then ``norm_pre`` if any.

        The one place that adds the CLS and register tokens; every path into the blocks goes through it.
        """
        prefix = self.prefix_tokens(tokens.shape[0])
        x = tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        norm_pre = self._modules.get("norm_pre")
        return x if norm_pre is None else norm_pre(x)

    def forward_tokens(self, tokens: torch.Tensor, keep: torch.Tensor | None = None,
                       lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, N, D) -> normed (B, P + n, D), prefix tokens first.

        ``keep`` (B, n): run only those tokens (MAE's visible ones). ``lengths`` (B,): the first
        ``lengths[b]`` tokens of row b are real, the rest padding; rows of equal length run together
        over their own tokens only (the blocks have no attention mask), so a padded row gives what it
        gives alone; outputs past a row's length are zero.
        """
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        if lengths is not None and bool((lengths < tokens.shape[1]).any()):
            P = self.num_prefix_tokens
            out = tokens.new_zeros(tokens.shape[0], P + tokens.shape[1], tokens.shape[2])
            for n in lengths.unique().tolist():
                rows = (lengths == n).nonzero().squeeze(1)
                out[rows, : P + n] = self.forward_tokens(tokens[rows, :n])
            return out
        x = self.with_prefix(tokens)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normed tokens (B, P + N, D) -> pooled (B, num_features) by ``pool``: token (CLS), avg (mean of
        the data tokens), token+avg (both, 2 * D) or map (attention pooling)."""
        if self.pool == "map":
            return self.attn_pool(tokens)
        if self.pool == "token":
            return tokens[:, 0]
        P = self.num_prefix_tokens
        if self.pool == "avg":
            return tokens[:, P:].mean(dim=1)
        if self.pool == "token+avg":
            return torch.cat([tokens[:, 0], tokens[:, P:].mean(dim=1)], dim=-1)
        raise ValueError(f"unknown pool {self.pool!r}; use {', '.join(POOLS)}")

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, P + N, D) -> pooled (B, num_features) -> ``fc_norm`` -> ``head`` (unless ``pre_logits``)."""
        feats = self.pool_tokens(tokens)
        fc_norm, head = self._modules.get("fc_norm"), self._modules.get("head")
        feats = feats if fc_norm is None else fc_norm(feats)
        return feats if pre_logits or head is None else head(feats)

    def forward_features(self, x) -> torch.Tensor:
        """The input -> normed tokens (B', P + N, D)."""
        return self.forward_tokens(self.tokenize(x))

    def forward(self, x) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NLC",
        return_prefix_tokens: bool = False,
        intermediates_only: bool = False,
    ):
        """Data tokens after the blocks in ``indices``, in the spirit of timm's method of that name.

        ``indices``: None = every block, an int n = the last n blocks, a sequence = those blocks
        (0-based, negative counts from the end). ``norm`` applies the final ``norm`` to each;
        ``output_fmt`` goes to ``format_intermediate`` ("NLC" (B, N, D) always works). With
        ``return_prefix_tokens`` each entry is (data tokens, prefix tokens (B, P, D)).
        Returns the list, or (final normed tokens (B, P + N, D), list) unless ``intermediates_only``;
        with ``intermediates_only`` the blocks after the deepest index are not run.
        """
        take = take_indices(indices, self.depth)
        t = self.with_prefix(self.tokenize(x))
        P = self.num_prefix_tokens
        out = []
        last = max(take) if intermediates_only else self.depth - 1
        for i, block in enumerate(self.blocks[: last + 1]):
            t = block(t)
            if i in take:
                y = self.norm(t) if norm else t
                data = self.format_intermediate(y[:, P:], x, output_fmt)
                out.append((data, y[:, :P]) if return_prefix_tokens else data)
        return out if intermediates_only else (self.norm(t), out)

    @torch.no_grad()
    def attention_maps(self, x) -> list[torch.Tensor]:
        """Softmax attention weights of every block, each (B', heads, P + N, P + N)."""
        t = self.with_prefix(self.tokenize(x))
        maps = []
        for block in self.blocks:
            t, attn = block(t, return_attention=True)
            maps.append(attn)
        return maps

    def no_weight_decay(self) -> set[str]:
        """Position embeddings and prefix tokens (as timm), plus the subclass's ``extra_no_weight_decay``."""
        own = {n for n in ("pos_embed", "cls_token", "reg_token") if n in self._parameters}
        return own | self.extra_no_weight_decay()

    def extra_no_weight_decay(self) -> set[str]:
        return set()

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise lr decay (``train.optim``): embeddings 0, blocks 1..depth, the top depth + 1."""
        return len(self.blocks) + 1

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name``: block i is i + 1, the final norm, pooling and head the top,
        everything else (tokenizer, prefix tokens, positions, ``norm_pre``) 0."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(TOP):
            return self.num_layers
        return 0


__all__ = [
    "POOLS", "Maskable", "MaskedTokens", "Trunk", "check_pool", "drop_path_rates", "gather_tokens", "init_weights",
    "make_blocks", "masked_mse", "sincos_1d",
]
