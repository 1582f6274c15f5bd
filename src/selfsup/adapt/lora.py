"""LoRA on the ViT's attention projections, through ``peft``.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a pretrained
Linear W (out, in) and learns a low-rank update: y = W x + (alpha / r) * B A x, with A (r, in)
random and B (out, r) zero at the start, so the adapted model starts as the pretrained one and
r * (in + out) numbers train per adapted layer. On a ViT block of width D the targets are
``attn.qkv`` (D -> 3D) and ``attn.proj`` (D -> D): 8 r D trainable numbers per block.

``peft.inject_adapter_in_model`` puts the adapters into our plain ``nn.Module`` (no transformers
model needed) and freezes the rest; ``merge_lora`` folds B A into W and gives back plain
``nn.Linear`` layers, so a merged classifier loads and runs without peft. peft is an optional
dependency, imported only when adapters are added.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

TARGETS = ("qkv", "proj")


def target_pattern(targets: Sequence[str] = TARGETS) -> str:
    """peft ``target_modules`` regex (full match) for the attention projections of every block.

    A regex rather than bare names: "proj" alone would also catch ``patch_embed.proj``.
    """
    return rf"(.*\.)?blocks\.\d+\.attn\.({'|'.join(targets)})"


def add_lora(
    encoder: nn.Module,
    rank: int = 8,
    alpha: float = 16,
    *,
    targets: Sequence[str] = TARGETS,
    modules: Sequence[str] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Add LoRA adapters to ``encoder`` in place and freeze everything but them; returns it.

    Targets the ``attn.{targets}`` Linears of every block, or exactly the named ``modules`` (as
    recorded by ``lora_settings``, for reloading a saved classifier).
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the optional dependency peft: pip install peft") from e

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=list(modules) if modules else target_pattern(targets))
    inject_adapter_in_model(config, encoder)
    if not lora_modules(encoder):
        raise ValueError(f"no modules matching {config.target_modules} to adapt in {type(encoder).__name__}")
    for name, p in encoder.named_parameters():
        p.requires_grad = "lora_" in name
    return encoder


def _is_lora(module: nn.Module) -> bool:
    # duck-typed so that code handling merged or plain models never needs peft
    return hasattr(module, "lora_A") and hasattr(module, "base_layer") and hasattr(module, "merge")


def lora_modules(module: nn.Module) -> list[str]:
    """Qualified names of the adapted layers (empty for a plain or merged model)."""
    return [name for name, m in module.named_modules() if _is_lora(m)]


def lora_settings(module: nn.Module) -> dict | None:
    """{"rank", "alpha", "modules"} of the adapters in ``module`` (relative names), None without any."""
    names = lora_modules(module)
    if not names:
        return None
    first = module.get_submodule(names[0])
    adapter = next(iter(first.r))
    return {"rank": int(first.r[adapter]), "alpha": float(first.lora_alpha[adapter]), "modules": names}


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += alpha / r * B A) and drop the adapter; in place."""
    for name in lora_modules(module):
        layer = module.get_submodule(name)
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, layer.get_base_layer())
    return module


__all__ = ["TARGETS", "add_lora", "lora_modules", "lora_settings", "merge_lora", "target_pattern"]
