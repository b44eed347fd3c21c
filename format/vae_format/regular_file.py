"""Reading a file of a model directory only once it is known to be a regular file of the
expected size: ``stat`` before ``open``, and again on the open descriptor.

So a FIFO never blocks (it is refused before it is opened, and the open is non-blocking
should one be swapped in), a device or ``/dev/zero`` behind a name is never read, and a
huge (e.g. sparse) file is refused by its size without reading a byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ModelFormatError

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def read_regular_file(path: Path, size: int, *, at_most: bool = False) -> bytes:
    """The bytes of ``path``, a regular file of exactly ``size`` bytes (``at_most``: of at
    most ``size``). FileNotFoundError passes through (callers word it); anything else
    wrong is a ModelFormatError naming ``path``."""
    try:
        before = os.stat(path)
        _check(before, path, size, at_most)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ModelFormatError(f"{path}: not readable ({exc.strerror or exc})") from None
    try:
        opened = os.fstat(fd)
        _check(opened, path, size, at_most)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise ModelFormatError(f"{path}: was replaced while it was being opened")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(opened.st_size + 1)  # one byte more: a file that grew is caught
    except OSError as exc:
        raise ModelFormatError(f"{path}: not readable ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) != opened.st_size:
        raise ModelFormatError(f"{path}: changed size while it was being read")
    return data


def _check(st: os.stat_result, path: Path, size: int, at_most: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{path}: is {file_kind(st.st_mode)}, not a regular file; refused")
    if at_most and st.st_size > size:
        raise ModelFormatError(
            f"{path}: is {st.st_size} bytes, more than the format allows ({size}); refused"
        )
    if not at_most and st.st_size != size:
        raise ModelFormatError(
            f"{path}: size is {st.st_size} bytes, manifest.json says {size} (truncated or modified)"
        )


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a directory", ...)."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((name for test, name in kinds if test(mode)), "a regular file")
