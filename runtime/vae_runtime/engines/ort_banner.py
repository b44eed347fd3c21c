"""Keeping ONNX Runtime's "EP Error" banner out of stdout, and reading its reason.

When a GPU provider fails to start, ORT's Python layer prints a banner to stdout before it
retries on the CPU: in results piped to other tools. ``banner_caught()`` makes a session with
``sys.stdout`` swapped for a filter that keeps that banner back and passes everything else
on to the real stdout, as it is written and in order: lines of other threads at once, lines
of the thread making the session once whole. The filter stays valid after the swap ends,
since another thread may have looked up ``sys.stdout`` before the swap back and write to it
later (a ``print`` looks it up once, then writes its text and its newline separately).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

_SWAP = threading.Lock()  # redirect_stdout swaps the process's sys.stdout: one at a time
_RULE = re.compile(r"\*+\n?")  # the banner's last line: asterisks only


class BannerFilter(io.TextIOBase):
    """A text stream in front of ``real``: whole lines of ``owner`` (a thread id) from one that
    holds "EP Error" up to a line of asterisks go to ``banner``; all else goes on to ``real``."""

    def __init__(self, real: TextIO | None, owner: int) -> None:
        self._real = real if real is not None else io.StringIO()  # no stdout: print drops text
        self._owner = owner
        self._lock = threading.Lock()
        self._pending = ""  # the owner's unfinished line
        self._in_banner = False
        self._swapped_back = False
        self.banner: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self._swapped_back or threading.get_ident() != self._owner:
                self._real.write(text)
                return len(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._line(line + "\n")
        return len(text)

    def _line(self, line: str) -> None:
        if self._in_banner:
            self.banner.append(line)
            self._in_banner = not _RULE.fullmatch(line)
        elif "EP Error" in line:
            self.banner.append(line)
            self._in_banner = True
        else:
            self._real.write(line)

    def flush(self) -> None:
        self._real.flush()

    def end_swap(self) -> None:
        """From now on everything goes straight to ``real`` (an unfinished line included)."""
        with self._lock:
            self._swapped_back = True
            if self._pending:
                self._real.write(self._pending)
                self._pending = ""


@contextlib.contextmanager
def banner_caught() -> Iterator[list[str]]:
    """Run the block with stdout filtered; the yielded list gets ORT's banner lines."""
    with _SWAP:
        caught = BannerFilter(sys.stdout, threading.get_ident())
        try:
            with contextlib.redirect_stdout(caught):
                yield caught.banner
        finally:
            caught.end_swap()


def banner_reason(banner: list[str], limit: int = 300) -> str:
    """The reason in the banner's "EP Error <reason> when using [...]", on one line ("": no
    banner). A long one keeps its end: ORT puts source paths and signatures first, the cause
    last ("Invalid device ID: 99, ...")."""
    match = re.search(r"^EP Error (.*?) when using ", "".join(banner), re.DOTALL | re.MULTILINE)
    if not match:
        return ""
    reason = " ".join(match.group(1).split())
    return reason if len(reason) <= limit else "..." + reason[3 - limit :]
