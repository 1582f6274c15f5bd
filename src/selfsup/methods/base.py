"""The base every method subclasses: its hooks, typed, with no-op defaults.

The engine and the API call these on any ``Method``; a method overrides the ones it needs. A
method-level name that looks like a hook (``on_*``, ``warm_*``, ``prepare*``, ``set_*``) but is
not one of ``HOOKS`` is refused when the class is defined, so a misspelt hook fails at import
instead of never being called.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel
from torch import nn

HOOKS = frozenset({"prepare", "on_train_batch_end", "on_train_end", "warm_start_options", "warm_start",
                   "set_teacher"})
HOOK_PREFIXES = ("on_", "warm_", "prepare", "set_")


class Method(nn.Module):
    """``Method(cfg, encoder_cfg, spec)``; owns ``encoder``; ``forward(batch) -> {"loss": scalar, ...}``.

    ``Config``: the pydantic model of its options; ``modalities``: the data types it trains on besides
    images and audio (tables, series); ``uses_teacher``: the API hands it a frozen teacher (``set_teacher``).
    """

    Config: ClassVar[type[BaseModel]]
    modalities: ClassVar[tuple[str, ...]] = ()
    uses_teacher: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in vars(cls):
            if name.startswith(HOOK_PREFIXES) and name not in HOOKS:
                raise TypeError(f"{cls.__name__}.{name} looks like a method hook but is none; the hooks are "
                                f"{', '.join(sorted(HOOKS))}")

    def prepare(self, source: Any, run_dir: Any = None) -> None:
        """Once before training, with the training source (e.g. fit a tokenizer, keep marginals)."""

    def on_train_batch_end(self, step: int, total_steps: int) -> None:
        """After each optimizer step (e.g. an EMA teacher)."""

    def on_train_end(self) -> None:
        """After the last step."""

    @staticmethod
    def warm_start_options(ws: Any) -> dict:
        """Method options that public weights fix (``methods.warmstart``); none by default."""
        return {}

    def warm_start(self, ws: Any) -> None:
        """Weights beyond the encoder from public weights (decoders, teachers, text towers)."""

    def set_teacher(self, encoder: nn.Module) -> None:
        """The frozen teacher of a method with ``uses_teacher``."""
        raise TypeError(f"{type(self).__name__} takes no teacher")


__all__ = ["HOOKS", "Method"]
