"""Text encoder: a byte-level BPE tokenizer and a transformer over its tokens.

The tokenizer is trained with Hugging Face ``tokenizers`` on the run's own captions
(``train_tokenizer``): lowercase, byte-level BPE (GPT-2 / CLIP style, so every string encodes),
with ``<pad>`` = 0, ``<sot>`` = 1 and ``<eot>`` = 2. ``encode_batch`` wraps each text as
``<sot> ... <eot>``, truncates (keeping ``<eot>`` last) and right-pads to the context length.

The transformer reuses the ViT's pre-norm ``Block`` with a mask: causal attention pooled at the
``<eot>`` token as in CLIP (Radford et al. 2021), or bidirectional attention pooled by the mean
of the real tokens or at ``<sot>`` (a CLS token, as BERT). A linear ``text_projection`` maps to
the joint embedding. The fitted tokenizer is kept inside the module as a uint8 buffer holding
its JSON, so a state dict (a checkpoint) carries it and ``load_state_dict`` restores it.

Public text towers load into the same module (``encoders.hub.load_clip``): CLIP's (causal, pooled
at the first ``eos_id`` or at the largest id, quick-GELU for OpenAI's, LayerNorm eps 1e-5) and
SigLIP's (bidirectional without a padding mask, pooled at the last position, tanh-GELU, a
projection with bias), with their own tokenizer.json and special ids (``pad_id``, ``eos_id``).
``TextConfig`` holds every option, so ``build_text(cfg)`` rebuilds a loaded tower.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn

from selfsup.encoders.layers import Attention, Block, attention
from selfsup.encoders.trunk import init_weights

PAD, SOT, EOT = "<pad>", "<sot>", "<eot>"
PAD_ID, SOT_ID, EOT_ID = 0, 1, 2


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Fit a lowercase byte-level BPE tokenizer of at most ``vocab_size`` tokens on ``texts``.

    The 256 bytes and the 3 special tokens are always in the vocabulary, so ``vocab_size`` >= 259.
    """
    if vocab_size < 259:
        raise ValueError(f"vocab_size {vocab_size} is below 259 (256 byte tokens + 3 special tokens)")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, SOT, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, SOT_ID), (EOT, EOT_ID)]
    )
    assert tok.token_to_id(PAD) == PAD_ID and tok.token_to_id(EOT) == EOT_ID
    return tok


def encode_batch(
    tok: Tokenizer, texts: Sequence[str], context_length: int, pad_id: int = PAD_ID, eos_id: int | None = EOT_ID
) -> torch.Tensor:
    """Texts -> token ids (B, context_length): ``<sot> ... <eot>`` (whatever the tokenizer's
    post-processor adds), truncated keeping ``eos_id`` last, right-padded with ``pad_id``."""
    out = torch.full((len(texts), context_length), pad_id, dtype=torch.long)
    for i, enc in enumerate(tok.encode_batch(list(texts))):
        ids = enc.ids
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [eos_id] if eos_id is not None else ids[:context_length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def decode(tok: Tokenizer, ids: Sequence[int] | torch.Tensor) -> str:
    """Token ids (with or without specials and padding) -> text."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return tok.decode(ids, skip_special_tokens=True).strip()


def masked_attention(attn: Attention, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """The ViT ``Attention`` (its qkv and proj weights) with a causal or a key-padding mask.

    x (B, T, D); mask (B, T) bool, True for real tokens (ignored when ``causal``: padding comes
    after ``<eot>``, so causal attention never lets a real token see it).
    """
    B, T, D = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.heads, D // attn.heads).permute(2, 0, 3, 1, 4)
    if causal:
        out = attention(q, k, v, is_causal=True)
    else:
        out = attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])
    return attn.proj(out.transpose(1, 2).reshape(B, T, D))


class TextBlock(Block):
    """The ViT pre-norm block (same parameter names) whose attention takes a mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = True) -> torch.Tensor:
        x = x + self._drop(self.ls1(masked_attention(self.attn, self.norm1(x), mask, causal)))
        return x + self._drop(self.ls2(self.mlp(self.norm2(x))))


TextPool = Literal["eot", "mean", "cls", "eos", "argmax", "last"]


class TextConfig(BaseModel):
    """Every option of ``TextTransformer``; ``build_text(cfg)`` rebuilds the module (weights apart)."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = 4096
    context_length: int = 32
    width: int = 256
    depth: int = 4
    heads: int = 4
    output_dim: int = 256
    causal: bool = True
    pool: TextPool = "eot"
    mlp_ratio: float = 4.0
    act: Literal["gelu", "quick_gelu", "gelu_tanh", "silu"] = "gelu"
    norm_eps: float = 1e-6
    proj_bias: bool = False
    init_values: float | None = None  # layer scale (some open_clip towers)
    pad_id: int = PAD_ID
    eos_id: int | None = EOT_ID
    pad_mask: bool = True  # bidirectional attention ignores padding (SigLIP attends to it: False)


def build_text(cfg: TextConfig) -> TextTransformer:
    """The text tower described by ``cfg`` (random weights; load a state dict into it)."""
    return TextTransformer(**cfg.model_dump())


class TextTransformer(nn.Module):
    """Token ids (B, T) -> text embeddings (B, output_dim); T <= ``context_length``.

    ``pool``: "eot" (the ``<eot>`` token, i.e. the last non-pad one; needs ``causal``), "mean"
    (mean of the non-pad tokens), "cls" (the first token; needs bidirectional), "eos" (the first
    ``eos_id``: Hugging Face CLIP), "argmax" (the largest id, which is ``<|endoftext|>`` in CLIP's
    vocabulary: open_clip and older Hugging Face CLIP configs) or "last" (the last position: SigLIP,
    which pads every text to the context length). Padding is ``pad_id``; bidirectional attention
    masks it out unless ``pad_mask=False``.
    Parameters: ``token_embedding``, ``positional_embedding`` (1, L, D), ``blocks.{i}`` (ViT
    names), ``ln_final``, ``text_projection``; buffer ``tokenizer_json``.
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        context_length: int = 32,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        output_dim: int = 256,
        causal: bool = True,
        pool: TextPool = "eot",
        mlp_ratio: float = 4.0,
        *,
        act: str = "gelu",
        norm_eps: float = 1e-6,
        proj_bias: bool = False,
        init_values: float | None = None,
        pad_id: int = PAD_ID,
        eos_id: int | None = EOT_ID,
        pad_mask: bool = True,
    ):
        super().__init__()
        if pool == "eot" and not causal:
            pool = "mean"  # without a causal mask the last token is no summary; fall back to the mean
        if pool == "cls" and causal:
            raise ValueError("cls pooling needs bidirectional attention (causal=False)")
        if pool == "eos" and eos_id is None:
            raise ValueError("eos pooling needs an eos_id")
        self.vocab_size, self.context_length = vocab_size, context_length
        self.width, self.causal, self.pool, self.output_dim = width, causal, pool, output_dim
        self.pad_id, self.eos_id, self.pad_mask = pad_id, eos_id, pad_mask
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(1, context_length, width))
        self.blocks = nn.ModuleList(
            TextBlock(width, heads, mlp_ratio, act=act, norm_eps=norm_eps, init_values=init_values)
            for _ in range(depth)
        )
        self.ln_final = nn.LayerNorm(width, eps=norm_eps)
        self.text_projection = nn.Linear(width, output_dim, bias=proj_bias)
        self.register_buffer("tokenizer_json", torch.zeros(0, dtype=torch.uint8))
        self._tokenizer: Tokenizer | None = None
        self.missing_tokenizer_reason: str | None = None  # set by loaders that found no tokenizer.json
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        init_weights(self.blocks.modules())
        nn.init.normal_(self.text_projection.weight, std=width**-0.5)
        if self.text_projection.bias is not None:
            nn.init.zeros_(self.text_projection.bias)

    # -- tokenizer ------------------------------------------------------------------------------
    def set_tokenizer(self, tok: Tokenizer) -> None:
        """Adopt a fitted tokenizer and store its JSON in the ``tokenizer_json`` buffer."""
        if tok.get_vocab_size() > self.vocab_size:
            raise ValueError(f"tokenizer has {tok.get_vocab_size()} tokens, the embedding only {self.vocab_size}")
        data = torch.frombuffer(bytearray(tok.to_str().encode("utf-8")), dtype=torch.uint8)
        self.tokenizer_json = data.to(self.tokenizer_json.device)
        self._tokenizer = tok

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            if self.tokenizer_json.numel() == 0:
                raise RuntimeError(self.missing_tokenizer_reason
                                   or "no tokenizer yet: fit one (method.prepare(source, run_dir)) or set_tokenizer")
            self._tokenizer = Tokenizer.from_str(bytes(self.tokenizer_json.cpu().numpy()).decode("utf-8"))
        return self._tokenizer

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "tokenizer_json"
        if key in state_dict:  # the buffer's length is the JSON's: resize before the copy
            self.tokenizer_json = torch.empty_like(state_dict[key], device=self.tokenizer_json.device)
        self._tokenizer = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> ids (B, context_length) on the module's device."""
        ids = encode_batch(self.tokenizer, texts, self.context_length, self.pad_id, self.eos_id)
        return ids.to(self.positional_embedding.device)

    # -- network --------------------------------------------------------------------------------
    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids (B, T) -> normed token features (B, T, width)."""
        T = tokens.shape[1]
        if T > self.context_length:
            raise ValueError(f"{T} tokens exceed the context length {self.context_length}")
        mask = tokens != self.pad_id if self.pad_mask and not self.causal else None
        x = self.token_embedding(tokens) + self.positional_embedding[:, :T]
        for block in self.blocks:
            x = block(x, mask, self.causal)
        return self.ln_final(x)

    def pool_tokens(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Normed token features (B, T, width) and their ids (B, T) -> pooled (B, width), per ``pool``."""
        rows = torch.arange(len(x), device=x.device)
        if self.pool == "eot":  # the last non-pad token: <eot> (right padding)
            last = (tokens != self.pad_id).long().sum(dim=1).clamp(min=1) - 1
            return x[rows, last]
        if self.pool == "eos":
            return x[rows, (tokens == self.eos_id).int().argmax(dim=1)]
        if self.pool == "argmax":
            return x[rows, tokens.argmax(dim=1)]
        if self.pool == "last":
            return x[:, -1]
        if self.pool == "cls":
            return x[:, 0]
        m = (tokens != self.pad_id).unsqueeze(-1).to(x.dtype)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids (B, T) -> pooled and projected (B, output_dim), not normalised."""
        return self.text_projection(self.pool_tokens(self.forward_features(tokens), tokens))

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> embeddings (B, output_dim), not normalised."""
        return self(self.tokenize(texts))

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding"}


__all__ = [
    "TextTransformer", "TextBlock", "TextConfig", "build_text", "masked_attention", "train_tokenizer",
    "encode_batch", "decode", "PAD_ID", "SOT_ID", "EOT_ID",
]
