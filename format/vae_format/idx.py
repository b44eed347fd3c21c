"""The IDX file format (MNIST's), gzip-compressed or raw: one reader for every package.

Image files (unsigned byte, 3 dimensions, 28x28) can be streamed in chunks, so memory stays
at one chunk however many images a file holds; any IDX file can also be parsed from memory.
Every structural problem is a :class:`DataFileError` naming the file and the reason.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import DataFileError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
IMAGE_DIMS = (28, 28)
NDIM = {"images": 3, "labels": 1}  # the two kinds of IDX file MNIST ships
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class IdxHeader:
    kind: str  # "images" or "labels"
    dims: tuple[int, ...]  # (count, rows, cols) or (count,)
    offset: int  # bytes before the first record (in the decompressed stream)

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def rows(self) -> int:
        return self.dims[1] if len(self.dims) > 1 else 1

    @property
    def cols(self) -> int:
        return self.dims[2] if len(self.dims) > 2 else 1

    @property
    def record_bytes(self) -> int:
        return math.prod(self.dims[1:])

    @property
    def data_bytes(self) -> int:
        return self.count * self.record_bytes


def open_idx(path: str | os.PathLike[str]) -> BinaryIO:
    """The file opened for reading, decompressed when its content is gzip (not its name)."""
    f = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def looks_like_idx(path: str | os.PathLike[str]) -> bool:
    """True when the file (after gunzip) starts like an IDX file: two zero bytes, a type."""
    try:
        with open_idx(path) as f:
            head = f.read(4)
    except _READ_ERRORS:
        return False
    return len(head) == 4 and head[:2] == b"\x00\x00" and head[3] in (1, 2, 3, 4)


def read_header(f: BinaryIO, where: str | os.PathLike[str], kind: str = "images") -> IdxHeader:
    """Read and check the header of an IDX file of ``kind`` from the stream ``f``."""
    head = f.read(4)
    if len(head) < 4:
        raise DataFileError(f"{where}: truncated IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head, "big")
    if head[:2] != b"\x00\x00":
        raise DataFileError(f"{where}: not an IDX file (bad magic number 0x{magic:08x})")
    if head[2] != UBYTE:
        raise DataFileError(
            f"{where}: bad magic number 0x{magic:08x}: IDX data type 0x{head[2]:02x} "
            f"is not unsigned byte (0x{UBYTE:02x})"
        )
    ndim = NDIM[kind]
    if head[3] != ndim:
        held = {1: "labels", 3: "images"}.get(head[3], f"{head[3]}-dimensional data")
        raise DataFileError(
            f"{where}: bad magic number 0x{magic:08x}: the file holds {held}, expected "
            f"{kind} (magic 0x{(UBYTE << 8) | ndim:08x}, {ndim} dimension(s))"
        )
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataFileError(f"{where}: truncated IDX header ({4 + len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    if kind == "images" and dims[1:] != IMAGE_DIMS:
        raise DataFileError(f"{where}: images are {dims[1]}x{dims[2]}, expected 28x28")
    return IdxHeader(kind, dims, 4 + 4 * ndim)


def parse_idx(data: bytes, where: str | os.PathLike[str], kind: str) -> np.ndarray:
    """An IDX file of ``kind`` held in memory, as a uint8 array sharing ``data``'s bytes."""
    header = read_header(io.BytesIO(data), where, kind)
    _check_length(header, len(data) - header.offset, where)
    return np.frombuffer(data, np.uint8, header.data_bytes, header.offset).reshape(header.dims)


def read_idx(path: str | os.PathLike[str], kind: str) -> np.ndarray:
    """A whole IDX file of ``kind`` (gzip or raw) as a uint8 array."""
    try:
        with open_idx(path) as f:
            data = f.read()
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    return parse_idx(data, path, kind)


def _check_length(header: IdxHeader, got: int, where: str | os.PathLike[str]) -> None:
    if got != header.data_bytes:
        what = "truncated" if got < header.data_bytes else "has trailing bytes"
        raise DataFileError(
            f"{where}: {what}: header promises {header.count} {header.kind} "
            f"({header.data_bytes} bytes), file holds {got} bytes"
        )


def read_idx_header(path: str | os.PathLike[str], kind: str = "images") -> IdxHeader:
    """The header of an IDX file; for a raw file the length is checked as well."""
    path = Path(path)
    try:
        with open_idx(path) as f:
            header = read_header(f, path, kind)
            compressed = isinstance(f, gzip.GzipFile)
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    if not compressed:
        _check_length(header, path.stat().st_size - header.offset, path)
    return header


def iter_idx_images(path: str | os.PathLike[str], chunk: int = 1024) -> Iterator[np.ndarray]:
    """Yield uint8 arrays of shape (n, 28, 28), n <= chunk, in file order.

    Truncation (or a gzip CRC error) is a DataFileError raised when it is reached; trailing
    bytes after the last image are refused at the end.
    """
    path = Path(path)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    try:
        f = open_idx(path)
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    with f:
        yield from iter_idx_stream(f, path, chunk)


def iter_idx_stream(
    f: BinaryIO, where: str | os.PathLike[str], chunk: int = 1024
) -> Iterator[np.ndarray]:
    """As :func:`iter_idx_images`, from an open (already decompressed) stream such as
    standard input; ``where`` names it in errors."""
    try:
        header = read_header(f, where, "images")
        yield from _chunks(f, header, chunk, where)
        if f.read(1):
            raise DataFileError(f"{where}: has trailing bytes after {header.count} images")
    except _READ_ERRORS as exc:
        raise DataFileError(f"{where}: cannot read ({exc})") from None


def _chunks(
    f: BinaryIO, header: IdxHeader, chunk: int, path: str | os.PathLike[str]
) -> Iterator[np.ndarray]:
    per_image = header.record_bytes
    left = header.count
    while left:
        n = min(chunk, left)
        data = f.read(n * per_image)
        if len(data) != n * per_image:
            done = header.count - left + len(data) // per_image
            raise DataFileError(
                f"{path}: truncated: header promises {header.count} images, file holds {done}"
            )
        left -= n
        # frombuffer shares the bytes; copy so callers may keep or modify the chunk
        yield np.frombuffer(data, np.uint8).reshape(n, header.rows, header.cols).copy()
