"""Streaming reader for IDX image files (the MNIST format), gzip-compressed or raw.

Images are read in chunks straight from the (decompressing) file object, so memory stays
at one chunk however many images the file holds. Only unsigned-byte, 3-dimensional files
of 28x28 images are accepted; anything else is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
IMAGE_DIMS = (28, 28)


@dataclass(frozen=True)
class IdxHeader:
    count: int
    rows: int
    cols: int
    offset: int  # bytes before the first image (in the decompressed stream)


def _open(path: Path) -> BinaryIO:
    f = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def looks_like_idx(path: str | os.PathLike[str]) -> bool:
    """True when the file (after gunzip) starts like an IDX file: two zero bytes, a type."""
    try:
        with _open(Path(path)) as f:
            head = f.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == 4 and head[:2] == b"\x00\x00" and head[3] in (1, 2, 3, 4)


def read_header(f: BinaryIO, path: Path) -> IdxHeader:
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\x00\x00":
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = head[2], head[3]
    if dtype != UBYTE:
        raise InputError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned byte (0x08)")
    if ndim != 3:
        what = "labels" if ndim == 1 else f"{ndim}-dimensional data"
        raise InputError(f"{path}: IDX file holds {what}, expected images (3 dimensions)")
    dims = f.read(12)
    if len(dims) < 12:
        raise InputError(f"{path}: truncated IDX header")
    count, rows, cols = (int.from_bytes(dims[i : i + 4], "big") for i in (0, 4, 8))
    if (rows, cols) != IMAGE_DIMS:
        raise InputError(f"{path}: IDX images are {rows}x{cols}, expected 28x28")
    return IdxHeader(count, rows, cols, 16)


def read_idx_header(path: str | os.PathLike[str]) -> IdxHeader:
    """The header of an IDX image file; for a raw file the length is checked as well."""
    path = Path(path)
    try:
        with _open(path) as f:
            header = read_header(f, path)
            compressed = isinstance(f, gzip.GzipFile)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not compressed:
        size = path.stat().st_size
        expected = header.offset + header.count * header.rows * header.cols
        if size != expected:
            what = "truncated" if size < expected else "has trailing bytes"
            raise InputError(
                f"{path}: {what}: header promises {header.count} images "
                f"({expected} bytes), file holds {size} bytes"
            )
    return header


def iter_idx_images(path: str | os.PathLike[str], chunk: int = 1024) -> Iterator[np.ndarray]:
    """Yield uint8 arrays of shape (n, 28, 28), n <= chunk, in file order.

    Truncation (or a gzip CRC error) is an InputError raised when it is reached; trailing
    bytes after the last image are refused at the end.
    """
    path = Path(path)
    if chunk < 1:
        raise InputError(f"chunk must be >= 1, got {chunk}")
    try:
        with _open(path) as f:
            header = read_header(f, path)
            per_image = header.rows * header.cols
            left = header.count
            while left:
                n = min(chunk, left)
                data = f.read(n * per_image)
                if len(data) != n * per_image:
                    done = header.count - left + len(data) // per_image
                    raise InputError(
                        f"{path}: truncated: header promises {header.count} images, "
                        f"file holds {done}"
                    )
                left -= n
                # frombuffer shares the bytes; copy so callers may keep or modify the chunk
                yield np.frombuffer(data, np.uint8).reshape(n, header.rows, header.cols).copy()
            if f.read(1):
                raise InputError(f"{path}: has trailing bytes after {header.count} images")
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
