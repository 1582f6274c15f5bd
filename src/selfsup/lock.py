"""One writer per run folder, and serialised read-modify-write of shared files.

``hold(folder)`` takes an exclusive, non-blocking ``fcntl.flock`` on ``folder/.lock`` for the
command now running (``writes`` marks the API entry points: pretrain, evaluate, adapt, anomaly,
report, forecast...): a second process that wants to write the same folder stops at once with one
line naming the holder's pid (``RunBusy``, a ``ConfigError``: rc 2 at the command line). The lock
is re-entrant inside one process (``demo`` pretrains, evaluates and reports one run) and is
released when the outermost entry point returns, or by the kernel when the process dies, so a
killed run never leaves a stale lock. Only rank 0 of a multi-process run takes it (the other ranks
write nothing).

``exclusive(path)`` is the blocking variant (on the folder itself) for short critical sections: ``merge_records`` holds
it around its read-modify-rename of ``metrics.json``, so concurrent merges never lose a record.

The lowest layer: imports only ``config`` (for the error type) and ``distributed``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from selfsup import distributed
from selfsup.config import ConfigError

try:  # POSIX; elsewhere locking is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_held: dict[Path, list] = {}  # resolved folder -> [fd, count]
_stack: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("selfsup_locks", default=None)
F = TypeVar("F", bound=Callable)


class RunBusy(ConfigError):
    """Another process is writing this folder."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip().split()[0]
        return f"pid {int(pid)}"
    except (OSError, ValueError, IndexError):
        return "pid unknown"


def acquire(folder: str | Path) -> None:
    """Take (or re-enter) the exclusive writer lock of ``folder``; ``RunBusy`` if another process holds it."""
    if fcntl is None or not distributed.is_global_zero():
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        return
    path = key / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunBusy(f"{folder} is being written by another selfsup process ({_holder(path)}); wait until it "
                      "ends or choose another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = [fd, 1]


def release(folder: str | Path) -> None:
    """Leave the lock taken by ``acquire``; the last release unlocks it."""
    key = Path(folder).resolve()
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(entry[0], 0)
        os.close(entry[0])  # closing the descriptor drops the flock


def hold(folder: str | Path) -> None:
    """Hold ``folder``'s writer lock until the running ``writes`` entry point returns (for the rest of
    the process when called outside one)."""
    acquire(folder)
    stack = _stack.get()
    if stack is not None:
        stack.callback(release, folder)


@contextlib.contextmanager
def writing(folder: str | Path) -> Iterator[Path]:
    """``with writing(run):`` the exclusive writer lock of ``run`` for the block."""
    acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(folder)


def writes(fn: F) -> F:
    """Decorate an API entry point: the locks it ``hold``s are released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            token = _stack.set(stack)
            try:
                return fn(*args, **kwargs)
            finally:
                _stack.reset(token)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Block until this process alone holds the lock of ``path``'s folder (a ``flock`` on the folder
    itself, so no file is left behind), for a short read-modify-write of ``path``."""
    if fcntl is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "RunBusy", "acquire", "exclusive", "hold", "release", "writes", "writing"]
