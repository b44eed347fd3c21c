"""Byte streams: a stream whose first bytes were read to tell its kind, and .npy headers
read from and written to streams, so arrays of any length pass in bounded memory."""

from __future__ import annotations

import ast
from typing import BinaryIO

import numpy as np

from .errors import InputError

NPY_MAGIC = b"\x93NUMPY"
ALIGN = 64  # numpy pads its headers so the data starts on a 64-byte boundary
WIDEST_COUNT = 2**63 - 1  # a header written for this many rows fits any real count


class Prefixed:
    """``stream`` with ``head`` (bytes already read from it) put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head, self._stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(n)
        if n is None or n < 0:
            data, self._head = self._head + self._stream.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        if len(data) < n:
            data += self._stream.read(n - len(data))
        return data

    def readable(self) -> bool:
        return True


def read_npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of a .npy stream (versions 1-3), or InputError."""
    head = f.read(len(NPY_MAGIC) + 2)
    if len(head) < 8 or not head.startswith(NPY_MAGIC):
        raise InputError(f"{where}: not a .npy stream")
    size_bytes = 2 if head[6] == 1 else 4
    raw = f.read(size_bytes)
    size = int.from_bytes(raw, "little") if len(raw) == size_bytes else -1
    text = f.read(size) if 0 < size <= 1 << 20 else b""
    try:
        header = ast.literal_eval(text.decode("latin1" if head[6] < 3 else "utf-8"))
        dtype = np.dtype(header["descr"])
        shape = tuple(int(d) for d in header["shape"])
        fortran = header["fortran_order"]
    except Exception as exc:  # any malformed header is a bad input
        raise InputError(f"{where}: not a readable .npy header ({type(exc).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: .npy holds Python objects (pickles are never read)")
    if fortran and len(shape) > 1:
        raise InputError(f"{where}: Fortran-ordered .npy cannot be streamed; save it in C order")
    if any(d < 0 for d in shape):
        raise InputError(f"{where}: .npy header has a negative dimension {shape}")
    return shape, dtype


def npy_header(shape: tuple[int, ...], dtype: np.dtype, length: int | None = None) -> bytes:
    """A version 1.0 .npy header for a C-ordered array, padded to ``length`` bytes (by
    default the next multiple of 64), as numpy writes it."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = text.encode("latin1")
    fixed = len(NPY_MAGIC) + 4  # magic, version (1, 0), two bytes of header length
    if length is None:
        length = -(-(fixed + len(body) + 1) // ALIGN) * ALIGN
    pad = length - fixed - len(body) - 1
    if pad < 0:
        raise ValueError(f"a .npy header for shape {shape} does not fit in {length} bytes")
    header = body + b" " * pad + b"\n"
    return NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header


def reserved_npy_header(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The header length that fits ``(count, *row_shape)`` for any count: written first,
    rewritten in place with the real count when the stream ends."""
    return len(npy_header((WIDEST_COUNT, *row_shape), dtype))
