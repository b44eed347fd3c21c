"""Opening a path as a stream of image batches: an image file, a folder of images, an IDX
file (gz or raw) or a .npy array. Batches are read lazily, so a source of any length can be
embedded or scored in bounded memory.

Folders: the regular files directly inside it, in sorted name order; hidden files (".*")
and subfolders are ignored. A file that is not a readable image fails the whole run
(default) or, with ``skip_bad=True``, is skipped and recorded in ``ImageSource.skipped``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .idx import iter_idx_images, looks_like_idx, read_idx_header
from .inputs import as_images, load_image, shape_problem

NPY_MAGIC = b"\x93NUMPY"


@dataclass
class ImageSource:
    """Images behind a path. ``count`` is known before reading (for a folder with
    ``skip_bad`` it is an upper bound); ``skipped`` lists (file, reason) once read."""

    path: Path
    kind: str  # "image", "folder", "idx" or "npy"
    count: int
    _batches: Callable[[int], Iterator[np.ndarray]] = field(repr=False)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def batches(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        """Yield float32 arrays (n, 1, 28, 28), n <= batch_size, in order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return self._batches(batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Batches of 256, so a source can be handed to ``VAE.embed_iter`` as it is."""
        return self.batches()

    def read(self) -> np.ndarray:
        """All images at once, float32 (N, 1, 28, 28)."""
        chunks = list(self.batches(4096))
        if not chunks:
            return np.zeros((0, 1, 28, 28), np.float32)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def open_images(
    path: str | os.PathLike[str], invert: bool = False, skip_bad: bool = False
) -> ImageSource:
    """An :class:`ImageSource` for ``path``, whose kind is told by content, not by name."""
    path = Path(path)
    if path.is_dir():
        return _folder(path, invert, skip_bad)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head == NPY_MAGIC:
        return _npy(path, invert)
    if looks_like_idx(path):
        header = read_idx_header(path)
        return ImageSource(
            path,
            "idx",
            header.count,
            lambda bs: (as_images(c, invert) for c in iter_idx_images(path, bs)),
        )
    return ImageSource(path, "image", 1, lambda bs: iter([load_image(path, invert)[None, None]]))


def _npy(path: Path, invert: bool) -> ImageSource:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    # Check shape and dtype now, so a bad file fails before any work is done.
    problem = shape_problem(array.shape)
    if problem:
        raise InputError(f"{path}: {problem}")
    if array.shape == (28, 28):
        array = array[None]
    try:
        as_images(array[:0])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None

    def batches(bs: int) -> Iterator[np.ndarray]:
        for start in range(0, len(array), bs):
            try:
                yield as_images(np.asarray(array[start : start + bs]), invert)
            except InputError as exc:
                raise InputError(f"{path}: images {start}..{start + bs - 1}: {exc}") from None

    return ImageSource(path, "npy", len(array), batches)


def _folder(path: Path, invert: bool, skip_bad: bool) -> ImageSource:
    try:
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise InputError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
    source = ImageSource(path, "folder", len(files), lambda bs: iter(()))

    def batches(bs: int) -> Iterator[np.ndarray]:
        source.skipped.clear()
        batch: list[np.ndarray] = []
        for file in files:
            try:
                batch.append(load_image(file, invert))
            except InputError as exc:
                if not skip_bad:
                    raise InputError(
                        f"{exc} (in folder {path}; skip such files with skip_bad=True, "
                        "or --skip-bad on the command line)"
                    ) from None
                source.skipped.append((file, str(exc)))
                continue
            if len(batch) == bs:
                yield np.stack(batch)[:, None]
                batch = []
        if batch:
            yield np.stack(batch)[:, None]

    source._batches = batches
    return source
