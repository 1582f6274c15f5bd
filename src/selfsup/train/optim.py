"""The optimiser's parameter groups: one rule for pretraining and for fine-tuning.

No weight decay on 1-D parameters (biases, norm scales) nor on the names a submodule lists in
``no_weight_decay()`` (position embeddings, class tokens), as in timm. Layer-wise learning-rate
decay (Bao et al. 2021, BEiT; 0.75 in MAE's fine-tuning, He et al. 2021): a submodule with
``layer_id(name)`` and ``num_layers`` (the ViT) says which layer each of its parameters is in,
from 0 (patch embedding) to ``num_layers`` (final norm); everything outside it (heads, decoders)
is at the top. A parameter at layer l of L trains at lr * layer_decay ** (L - l), so the early,
most general layers move least.
"""

from __future__ import annotations

from torch import nn


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW parameter groups of ``model``'s trainable parameters.

    Each group has ``params``, ``weight_decay`` (0 for the exempt) and ``lr_scale`` (the layer's
    factor; 1 without layer decay), which the caller multiplies into its learning rate. Groups
    come in a fixed order: by layer, decayed before exempt.
    """
    exempt: set[str] = set()
    layered: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if hasattr(m, "no_weight_decay"):
            exempt |= {prefix + n for n in m.no_weight_decay()}
        if layer_decay != 1.0 and hasattr(m, "layer_id") and not any(prefix.startswith(p) for p in layered):
            layered[prefix] = m
    top = max((m.num_layers for m in layered.values()), default=0)

    def layer(name: str) -> int:
        owner = next((p for p in layered if name.startswith(p)), None)
        return top if owner is None else layered[owner].layer_id(name[len(owner):])

    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in exempt
        lid = layer(name)
        groups.setdefault((lid, not decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                             "lr_scale": layer_decay ** (top - lid)})["params"].append(p)
    return [groups[k] for k in sorted(groups)]


__all__ = ["param_groups"]
