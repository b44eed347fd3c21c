"""Rows in and rows out: what a source yields (:class:`SourceBatch`, behind an
:class:`ImageSource`) and what the writers take (:class:`ResultBatch`, described by a
:class:`Schema`). Every row says where it came from, so any output joins back to its input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vae_format.grid import to_pixels

from .errors import InputError
from .names import display_name

SOURCE_KEYS = ("source", "index")


@dataclass(frozen=True)
class SourceBatch:
    """Consecutive rows of a source. Every row has a source (the file's name as
    :func:`vae_runtime.names.data_name` writes it) and an index within that file; a row
    that could not be read has an error and no image, so ``images`` holds the rows whose
    ``errors`` entry is None, in order."""

    images: np.ndarray  # (k, 1, 28, 28) float32: the rows that were read
    sources: list[str]
    indices: np.ndarray  # int64, one per row
    errors: list[str | None]
    ids: Any = None  # one value per row from a table's id column, or None

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], bool)


def uniform_rows(images: np.ndarray, source: str, start: int, ids: Any = None) -> SourceBatch:
    """Rows start.. of one multi-image file, all read."""
    n = len(images)
    return SourceBatch(
        images, [source] * n, np.arange(start, start + n, dtype=np.int64), [None] * n, ids
    )


@dataclass
class ImageSource:
    """Images behind one or more paths. ``count`` is known before reading (for folders
    with ``skip_bad`` it is an upper bound; -1 for a stream whose length comes later);
    ``skipped`` lists (file, reason) and is filled while reading; ``ignored`` and
    ``subfolders`` are the folder entries that were not read (see :mod:`.folders`)."""

    path: Path
    kind: str  # "image", "folder", "idx", "npy", "parquet", "stdin" or "files"
    count: int
    _rows: Callable[[int], Iterator[SourceBatch]] = field(repr=False)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    subfolders: list[Path] = field(default_factory=list)
    id_name: str | None = None  # a table's id column, carried to the outputs
    per_file: bool = False  # rows come from separate files (a folder or a list of files)
    reading: Any = None  # the vae_runtime.reading.Reading its images go through

    def rows(self, batch_size: int = 256) -> Iterator[SourceBatch]:
        """Yield :class:`SourceBatch` es of at most ``batch_size`` rows, in order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.skipped.clear()
        return self._rows(batch_size)

    def batches(self, batch_size: int = 256) -> Iterator[np.ndarray]:
        """Yield float32 arrays (n, 1, 28, 28), n <= batch_size, of the images read."""
        return (b.images for b in self.rows(batch_size) if len(b.images))

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

    @property
    def name(self) -> str:
        """The input, escaped for a message."""
        return display_name(self.path)

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns that say which input a row is: the id column, or source and index."""
        return (self.id_name,) if self.id_name else SOURCE_KEYS


@dataclass(frozen=True)
class Column:
    """A value column: one row's shape (() for a number) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def width(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Schema:
    """What a writer is given: key columns (which input each row is), value columns, and
    whether rows may be skipped inputs (then a ``status`` and an ``error`` column)."""

    keys: tuple[str, ...]
    values: tuple[Column, ...]
    status: bool = True

    @property
    def main(self) -> Column:
        """The column a single-array format (.npy) holds."""
        return self.values[0]


@dataclass(frozen=True)
class ResultBatch:
    """Rows for the writers: ``keys`` has a value per row, ``values`` a row per row
    without error (``errors`` is None when every row is fine)."""

    keys: dict[str, Sequence[Any]]
    values: dict[str, np.ndarray]
    errors: list[str | None] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.keys.values())))

    @property
    def ok(self) -> np.ndarray:
        if self.errors is None:
            return np.ones(len(self), bool)
        return np.array([e is None for e in self.errors], bool)

    def ok_keys(self) -> dict[str, Sequence[Any]]:
        """The key columns of the rows without error."""
        if self.errors is None or all(e is None for e in self.errors):
            return self.keys
        keep = np.flatnonzero(self.ok)
        return {k: _take(v, keep) for k, v in self.keys.items()}

    @classmethod
    def of(
        cls, batch: SourceBatch, values: dict[str, np.ndarray], id_name: str | None = None
    ) -> ResultBatch:
        """The results of a source's rows, keyed as the source says."""
        if id_name:
            keys: dict[str, Sequence[Any]] = {id_name: batch.ids}
        else:
            keys = {"source": batch.sources, "index": batch.indices}
        errors = None if all(e is None for e in batch.errors) else batch.errors
        return cls(keys, values, errors)


def _take(values: Any, keep: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[keep]
    if hasattr(values, "take"):  # a pyarrow array
        return values.take(keep)
    return [values[i] for i in keep]


def cast_values(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``; float images in [0, 1] become uint8 pixels rounded half up
    (the rule of :func:`vae_format.grid.to_pixels`)."""
    values = np.asarray(values)
    if np.dtype(dtype) == np.uint8 and values.dtype.kind == "f":
        return to_pixels(values)
    return np.ascontiguousarray(values, dtype)
