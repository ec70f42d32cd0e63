"""SIGTERM and SIGHUP stop a command as Ctrl-C does, and are never lost.

``kill PID`` (a scheduler's preemption) and a closed terminal or SSH session (SIGHUP) would kill
a process on the spot; the CLI and the sweep take them over (where the default, die, would
apply: under ``nohup`` SIGHUP stays ignored) with :func:`interrupt`, which raises
``KeyboardInterrupt`` so that cleanup runs (temporary files, ``.lock``, a run folder without a
checkpoint yet).

A signal's handler runs wherever the main thread happens to be. Inside a weakref callback or a
``__del__`` (an import's module-lock cleanup, say) Python prints "Exception ignored" and carries
on, so the ``KeyboardInterrupt`` is lost: a ``cegeo train`` signalled while its first probe
imported the theory trained on to the end. :func:`interrupt` therefore also records the
signal, and long loops call :func:`check_interrupt` at safe points (every training step).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_received: list[int] = []  # signals taken over by interrupt() since install()


def interrupt(signum: int, frame: Any) -> None:
    """Signal handler: raise ``KeyboardInterrupt`` (as Ctrl-C) and remember the signal."""
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def check_interrupt() -> None:
    """Raise ``KeyboardInterrupt`` if :func:`interrupt` has run (its own raise may have been
    swallowed); a no-op in a process that never installed it (cegeo used as a library)."""
    if _received:
        raise KeyboardInterrupt(f"signal {_received[0]}")


def install() -> list[int]:
    """Take SIGTERM and SIGHUP over with :func:`interrupt` where their default applies (main
    thread only); returns the signals taken, for :func:`uninstall`."""
    installed: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)  # no SIGHUP on Windows
            if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, interrupt)
                installed.append(sig)
    return installed


def uninstall(installed: list[int]) -> None:
    """Give the signals :func:`install` took back their default, and forget those received."""
    for sig in installed:
        signal.signal(sig, signal.SIG_DFL)
    _received.clear()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """:func:`install` for the duration of the block."""
    installed = install()
    try:
        yield
    finally:
        uninstall(installed)
