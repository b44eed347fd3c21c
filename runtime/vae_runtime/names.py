"""File names as text: escaped for a terminal, or as valid UTF-8 for a data file.

A POSIX file name is bytes. Python decodes the bytes that are not UTF-8 as lone surrogates
(``os.fsdecode``), which a strict UTF-8 stream cannot encode, and a name may hold a newline
or an escape sequence. So names are never printed raw: :func:`display_name` escapes them,
:func:`data_name` makes the text that output files record.
"""

from __future__ import annotations

import os
from typing import Any

ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _text(name: Any) -> str:
    return name if isinstance(name, str) else os.fsdecode(name)


def _undecodable(ch: str) -> bool:
    """A byte that was not UTF-8, as ``os.fsdecode`` (surrogateescape) decodes it."""
    return "\udc80" <= ch <= "\udcff"


def display_name(name: str | bytes | os.PathLike[Any]) -> str:
    """``name`` for a message: printable characters as they are; bytes that are not UTF-8
    as ``\\xNN``; newlines, tabs, escape sequences and other control or invisible
    characters as Python escapes. The result is one line, safe on any UTF-8 stream."""
    text = _text(name)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif _undecodable(ch):
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ESCAPES.get(ch) or ascii(ch)[1:-1])
    return "".join(out)


def data_name(name: str | bytes | os.PathLike[Any]) -> str:
    """``name`` as valid UTF-8 text for an output file (JSON, CSV, Parquet): as it is,
    except bytes that are not UTF-8, which become ``\\xNN``. Newlines and other characters
    are kept; each format quotes them."""
    text = _text(name)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
