"""What every job shares: the injectable ``log`` callable (print by default, stderr under --json)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def say(msg: str) -> None:
    print(msg, flush=True)
