"""Where images come from: :func:`as_images` turns anything the public API accepts (an
array, a PIL image, a path, or a list of those) into the encoder's input, and
:func:`open_images` opens a path as a stream of image batches: an image file, a folder of
images, an IDX file (gz or raw) or a .npy array. Batches are read lazily, so a source of
any length can be embedded or scored in bounded memory.

Folders: the regular files directly inside it, in sorted name order; hidden files (".*")
and subfolders are ignored. A file that is not a readable image fails the whole run
(default) or, with ``skip_bad=True``, is skipped and recorded in ``ImageSource.skipped``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from vae_format.errors import DataFileError
from vae_format.idx import iter_idx_images, looks_like_idx, read_idx_header

from .arrays import array_to_images, shape_problem
from .errors import InputError
from .images import image_to_array, is_pil, load_image

if TYPE_CHECKING:
    from PIL import Image as PILImage

NPY_MAGIC = b"\x93NUMPY"

# What the public API accepts as images: an array, a PIL image, a path, or a list of those.
Images: TypeAlias = "np.ndarray | PILImage.Image | str | os.PathLike[str] | Sequence[Any]"


def as_images(images: Images, invert: bool = False) -> np.ndarray:
    """``images`` as a C-contiguous float32 array (N, 1, 28, 28) in [0, 1].

    ``invert=True`` maps v -> 1 - v, for dark ink on a light background.
    """
    if type(images) is np.ndarray:  # first: the hot path of encode()
        return array_to_images(images, invert)
    if isinstance(images, (str, os.PathLike)):
        return open_images(images, invert=invert).read()
    if is_pil(images):
        return image_to_array(images, invert=invert)[None, None]
    if isinstance(images, (list, tuple)) and images and all(_is_file_like(i) for i in images):
        return np.concatenate([as_images(i, invert) for i in images])
    return array_to_images(images, invert)


def _is_file_like(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) or is_pil(obj)


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

    def read(self, limit: int | None = None) -> np.ndarray:
        """All images at once (or the first ``limit``), float32 (N, 1, 28, 28)."""
        chunks, have = [], 0
        for batch in self.batches(4096 if limit is None else max(1, min(limit, 4096))):
            chunks.append(batch if limit is None else batch[: limit - have])
            have += len(chunks[-1])
            if limit is not None and have >= limit:
                break
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
        return _idx(path, invert)
    return ImageSource(path, "image", 1, lambda bs: iter([load_image(path, invert)[None, None]]))


def _idx(path: Path, invert: bool) -> ImageSource:
    try:
        count = read_idx_header(path).count
    except DataFileError as exc:
        raise InputError(str(exc)) from None

    def batches(bs: int) -> Iterator[np.ndarray]:
        try:
            for chunk in iter_idx_images(path, bs):
                yield array_to_images(chunk, invert)
        except DataFileError as exc:  # the runtime's callers catch InputError
            raise InputError(str(exc)) from None

    return ImageSource(path, "idx", count, batches)


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
        array_to_images(array[:0])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None

    def batches(bs: int) -> Iterator[np.ndarray]:
        for start in range(0, len(array), bs):
            try:
                yield array_to_images(np.asarray(array[start : start + bs]), invert)
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
