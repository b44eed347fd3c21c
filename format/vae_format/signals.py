"""SIGTERM handled like Ctrl-C by the command-line tools: it raises :class:`Terminated`
in the main thread, so every ``finally`` and ``except BaseException`` cleanup runs
(temporary files and staging folders are removed) and the tool exits 143 (128 + 15), as
after its default action, instead of dying with its temporary files left behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised by SIGTERM inside :func:`sigterm_raises`; a BaseException, like KeyboardInterrupt."""


def _raise(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
