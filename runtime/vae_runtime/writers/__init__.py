"""Output files whose format follows the file name: ``.npy``, ``.npz``, ``.jsonl``,
``.csv``, ``.parquet`` (pyarrow), ``.png`` (a grid of images), ``-`` (standard output, as
jsonl, csv or npy); a folder of PNGs through :class:`PngDirWriter`. An unknown extension is
an error, never npy bytes under another name.

Writers are opened before any work (so a bad output path fails at once), take
:class:`~vae_runtime.records.ResultBatch` es while the work streams, and land together
when it ends (:func:`writing`); on an error none of them leaves a file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from ..names import display_name
from ..records import ResultBatch, Schema
from .arrays import NpyWriter, NpzWriter, sidecar_path
from .base import STDOUT
from .images import GRID_MAX, GridWriter, PngDirWriter, png_name
from .text import CsvWriter, JsonlWriter

__all__ = [
    "FORMATS",
    "GRID_MAX",
    "STDOUT",
    "STDOUT_FORMATS",
    "GridWriter",
    "PngDirWriter",
    "Writer",
    "open_writer",
    "output_format",
    "png_name",
    "sidecar_path",
    "writing",
]

FORMATS = {
    ".npy": "npy",
    ".npz": "npz",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".png": "png",
}
STDOUT_FORMATS = ("jsonl", "csv", "npy")
OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_SHAPE = (1, 28, 28)


class Writer(Protocol):
    rows: int
    name: str

    def write(self, batch: ResultBatch) -> None: ...
    def commit(self) -> None: ...
    def abort(self, exc: BaseException) -> None: ...


def output_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format of an output: ``fmt`` for standard output, else told by the extension."""
    if os.fspath(path) == STDOUT:
        fmt = fmt or "jsonl"
        if fmt not in STDOUT_FORMATS:
            raise InputError(f"--format {fmt}: standard output takes {', '.join(STDOUT_FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        hint = " (grids are written as PNG)" if suffix in OTHER_IMAGE_SUFFIXES else ""
        raise InputError(
            f"{display_name(path)}: unknown output format {suffix or '(no extension)'!r}"
            f"{hint}; name the file with one of {known}"
        )
    if fmt is not None and fmt != FORMATS[suffix]:
        raise InputError(f"{display_name(path)}: --format {fmt} disagrees with the extension")
    return FORMATS[suffix]


def open_writer(
    path: str | os.PathLike[str],
    schema: Schema,
    *,
    fmt: str | None = None,
    expected: int | None = None,
    with_sidecar: bool = False,
    nrow: int = 8,
    grid_max: int = GRID_MAX,
) -> Writer:
    """A writer for ``path`` in the format its name says (``fmt`` for ``-``)."""
    kind = output_format(path, fmt)
    if os.fspath(path) != STDOUT and Path(path).is_dir():
        raise InputError(f"{display_name(path)}: is a directory; give a file name")
    if kind == "png":
        if schema.main.shape != IMAGE_SHAPE:
            raise InputError(
                f"{display_name(path)}: a .png output holds images; write "
                f"{schema.main.name} to .npy, .npz, .jsonl, .csv or .parquet"
            )
        return GridWriter(path, schema, nrow=nrow, limit=grid_max)
    if kind == "npy":
        return NpyWriter(path, schema, expected=expected, with_sidecar=with_sidecar)
    if kind == "npz":
        return NpzWriter(path, schema)
    if kind == "jsonl":
        return JsonlWriter(path, schema)
    if kind == "csv":
        return CsvWriter(path, schema)
    from ..tables import ParquetWriter

    return ParquetWriter(path, schema)


@contextmanager
def writing(writers: Sequence[Writer]) -> Iterator[Sequence[Writer]]:
    """Commit every writer when the block ends; abort them all on an exception."""
    try:
        yield writers
    except BaseException as exc:
        for w in writers:
            w.abort(exc)
        raise
    pending = list(writers)
    try:
        while pending:
            pending[0].commit()
            pending.pop(0)
    except BaseException as exc:
        for w in pending[1:]:
            w.abort(exc)
        raise


def write_all(writers: Sequence[Writer], batch: ResultBatch) -> None:
    for w in writers:
        w.write(batch)


def describe(writers: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"path": w.name, "rows": w.rows} for w in writers]
