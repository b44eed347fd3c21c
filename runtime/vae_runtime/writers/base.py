"""What every writer shares: a target that is a temporary file renamed over the user's
path when the stream ends (vae_format's atomic writer), or standard output for ``-``."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Any

from vae_format.atomic import atomic_path

from ..names import display_name
from ..records import ResultBatch, Schema

STDOUT = "-"


class Output:
    """A writer of :class:`ResultBatch` es: ``write`` each, then ``commit`` (the file
    appears whole) or ``abort`` (nothing appears; an existing file is kept)."""

    binary = True  # the file is opened in binary mode, else as UTF-8 text

    def __init__(self, path: str | os.PathLike[str], schema: Schema, **_: Any) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0  # rows written (with a value)
        self._stack = contextlib.ExitStack()
        self.to_stdout = os.fspath(path) == STDOUT
        self.file = self._open_target(path)

    @property
    def name(self) -> str:
        return "<stdout>" if self.to_stdout else display_name(self.path)

    def _open_target(self, path: str | os.PathLike[str]) -> IO[Any]:
        if self.to_stdout:
            sys.stdout.flush()
            return sys.stdout.buffer if self.binary else sys.stdout
        tmp = self._stack.enter_context(atomic_path(path))
        if self.binary:
            return self._stack.enter_context(open(tmp, "wb"))
        return self._stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))

    def sidecar(self, path: Path) -> IO[str]:
        """A second text file that lands (or not) with this one."""
        tmp = self._stack.enter_context(atomic_path(path))
        return self._stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))

    def write(self, batch: ResultBatch) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the file (e.g. its header) before it is renamed into place."""

    def commit(self) -> None:
        self.finish()
        self.file.flush()
        self._stack.close()

    def abort(self, exc: BaseException) -> None:
        if self.to_stdout:
            return
        self._stack.__exit__(type(exc), exc, exc.__traceback__)
