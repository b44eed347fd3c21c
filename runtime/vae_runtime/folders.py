"""Which files of a folder are read as images, and in what order.

Order is natural (``img2`` before ``img10``, as ``ls -v`` sorts), component by component,
so it is stable across file systems and runs. Hidden entries (``.*``) and files that are
obviously not images (``Thumbs.db``, ``desktop.ini``, ...) are left out and reported as
ignored; subfolders are read with ``recursive=True`` and otherwise reported as not read.
Symlinked folders are not followed (no cycles); symlinked files are read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .names import display_name

# Files that operating systems and tools drop into image folders; never images.
NOT_IMAGES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "__macosx"})
_RUNS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str, str], ...]:
    """Sort key: digit runs compare as numbers, text case-insensitively, ties by the raw
    text, so the order is total and the same everywhere."""
    parts: list[tuple[int, int | str, str]] = []
    for i, run in enumerate(_RUNS.split(name)):
        if i % 2:
            parts.append((0, int(run), run))
        elif run:
            parts.append((1, run.casefold(), run))
    return tuple(parts)


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name.casefold() in NOT_IMAGES


@dataclass
class Listing:
    files: list[Path] = field(default_factory=list)  # to read, in natural order
    ignored: list[Path] = field(default_factory=list)  # hidden or obviously not images
    subfolders: list[Path] = field(default_factory=list)  # present but not read


def list_folder(folder: Path, recursive: bool = False) -> Listing:
    """The image files of ``folder`` (and, with ``recursive``, of its subfolders)."""
    listing = Listing()
    _walk(folder, recursive, listing)
    return listing


def _walk(folder: Path, recursive: bool, listing: Listing) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: natural_key(e.name))
    except OSError as exc:
        raise InputError(
            f"{display_name(folder)}: cannot list folder ({exc.strerror or exc})"
        ) from None
    for entry in entries:
        path = folder / entry.name
        if is_ignored(entry.name):
            listing.ignored.append(path)
        elif entry.is_dir(follow_symlinks=False):
            if recursive:
                _walk(path, recursive, listing)
            else:
                listing.subfolders.append(path)
        elif entry.is_file():
            listing.files.append(path)
        else:  # a FIFO, socket, device or dangling link: never opened
            listing.ignored.append(path)
