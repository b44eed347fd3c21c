"""Where images come from: :func:`as_images` turns anything the public API accepts (an
array, a PIL image, a path, or a list of those) into the encoder's input, and
:func:`open_images` opens paths as a stream of image batches: image files, folders of
images, IDX files (gz or raw), .npy arrays, Parquet tables and standard input (``-``).
Batches are read lazily, so a source of any length is embedded or scored in bounded memory,
and each batch says which file (and which image within it) every row came from.

Folders: their image files in natural order (:mod:`vae_runtime.folders`), subfolders with
``recursive=True``. A file that is not a readable image fails the whole run (default) or,
with ``skip_bad=True``, is skipped: its row carries the reason and ``ImageSource.skipped``
lists it.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

import numpy as np

from vae_format.errors import DataFileError
from vae_format.idx import GZIP_MAGIC, iter_idx_images, iter_idx_stream, read_idx_header

from .errors import InputError
from .folders import list_folder
from .images import decode_image, is_pil, load_image, read_file_object
from .names import data_name, display_name
from .reading import Reading
from .records import ImageSource, SourceBatch, uniform_rows
from .streams import Prefixed, read_npy_header

if TYPE_CHECKING:
    from PIL import Image as PILImage

NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"
STDIN = "-"
LIST_HINT = " (skip such files with skip_bad=True, or --skip-bad on the command line)"
STDIN_IMAGE_LIMIT = 1 << 28  # one encoded image read from stdin: at most 256 MiB

# What the public API accepts as images: an array (or nested list), a PIL image, a path,
# encoded bytes or an open binary file, or a list of those.
Images: TypeAlias = "np.ndarray | PILImage.Image | str | os.PathLike[str] | Sequence[Any]"
Paths: TypeAlias = "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]"


def as_images(images: Images, invert: bool = False, reading: Reading | None = None) -> np.ndarray:
    """``images`` as a C-contiguous float32 array (N, 1, 28, 28) in [0, 1].

    ``reading``: the model's preprocessing and polarity (:mod:`vae_runtime.reading`); None
    reads as before: the whole image fitted into 28x28, inverted (v -> 1 - v) when
    ``invert`` (dark ink on a light background).
    """
    reading = Reading(None, bool(invert)) if reading is None else reading
    return _read(images, reading, "images")


def _read(images: Any, reading: Reading, where: str) -> np.ndarray:
    """:func:`as_images` of one input; ``where`` names it in notes (images[3])."""
    if type(images) is np.ndarray:  # first: the hot path of encode()
        return reading.arrays(images, where)
    if isinstance(images, (str, os.PathLike)):
        return _open(images, reading, False, False, None, None).read()
    if is_pil(images):
        return reading.pil(images, where)[None, None]
    if isinstance(images, (bytes, bytearray, memoryview)):
        return _encoded(bytes(images), where, reading)[None, None]
    if _is_binary_file(images):
        return read_file_object(images, _file_name(images), reading)[None, None]
    if isinstance(images, (list, tuple)) and images and _one_by_one(images):
        return np.concatenate([_read(x, reading, f"{where}[{i}]") for i, x in enumerate(images)])
    return reading.arrays(images, where)


def _encoded(data: bytes, where: str, reading: Reading) -> np.ndarray:
    try:
        return decode_image(data, where, reading=reading)
    except InputError as exc:
        raise InputError(
            f"raw bytes are read as an encoded image file (PNG, JPEG, ...): {exc}; "
            "give pixel data as an array"
        ) from None


def _is_binary_file(obj: Any) -> bool:
    return isinstance(obj, (io.BufferedIOBase, io.RawIOBase)) or (
        hasattr(obj, "read") and hasattr(obj, "seek") and not isinstance(obj, io.TextIOBase)
    )


def _file_name(f: Any) -> str:
    name = getattr(f, "name", None)
    return display_name(name) if isinstance(name, (str, os.PathLike)) else type(f).__name__


def _one_by_one(items: Sequence[Any]) -> bool:
    """A list read item by item: it holds files, PIL images or bytes, or arrays (each an
    image or a batch, in any layout); otherwise (numbers) it is one array."""
    if any(_is_file_like(i) for i in items):
        return True
    return all(isinstance(i, np.ndarray) for i in items)


def is_paths(images: Any) -> bool:
    """True for a path or a non-empty list of paths: what :func:`open_images` streams."""
    if isinstance(images, (str, os.PathLike)):
        return True
    return (
        isinstance(images, (list, tuple))
        and bool(images)
        and all(isinstance(i, (str, os.PathLike)) for i in images)
    )


def _is_file_like(obj: Any) -> bool:
    return (
        isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview))
        or is_pil(obj)
        or _is_binary_file(obj)
    )


def open_images(
    path: Paths,
    invert: bool = False,
    skip_bad: bool = False,
    *,
    recursive: bool = False,
    column: str | None = None,
    id_column: str | None = None,
    reading: Reading | None = None,
) -> ImageSource:
    """An :class:`ImageSource` for ``path`` (or several paths, read one after the other);
    a file's kind is told by its content, not its name. ``-`` is standard input (an image,
    an IDX stream or a .npy). ``column`` / ``id_column``: for a Parquet table, the image
    column (default: the only one that can hold images) and a column of ids to carry to
    the outputs (needs the ``parquet`` extra). ``reading``: the model's preprocessing
    (:mod:`vae_runtime.reading`, kept as ``source.reading``); None reads as before, with
    ``invert``."""
    reading = Reading(None, bool(invert)) if reading is None else reading
    source = _open(path, reading, skip_bad, recursive, column, id_column)
    source.reading = reading
    return source


def _open(
    path: Paths,
    reading: Reading,
    skip_bad: bool,
    recursive: bool,
    column: str | None,
    id_column: str | None,
) -> ImageSource:
    if isinstance(path, (list, tuple)):
        return _many(list(path), reading, skip_bad, recursive, column, id_column)
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"expected a path or a list of paths, got {type(path).__name__}")
    if os.fspath(path) == STDIN:
        return _stdin(reading)
    path = Path(path)
    if path.is_dir():
        return _folder(path, reading, skip_bad, recursive)
    kind = _sniff(path)
    if kind == "npy":
        return _npy(path, reading)
    if kind == "idx":
        return _idx(path, reading)
    if kind == "parquet":
        from .tables import open_parquet

        return open_parquet(path, column, id_column, reading=reading, skip_bad=skip_bad)
    return _files([path], reading, skip_bad, path, "image")


def _sniff(path: Path) -> str:
    """ "npy", "idx", "parquet" or "image" (anything else), from the first bytes."""
    where = display_name(path)
    if not path.exists():
        raise InputError(f"{where}: no such file or directory")
    if not path.is_file():
        raise InputError(f"{where}: not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
            if head[:2] == GZIP_MAGIC:  # gzip holds IDX or nothing we read
                f.seek(0)
                with gzip.GzipFile(fileobj=f) as g:
                    return "idx" if _kind(_safe_read(g, 4)) == "idx" else "image"
    except OSError as exc:
        raise InputError(f"{where}: cannot read ({exc.strerror or exc})") from None
    return _kind(head)


def _safe_read(f: Any, n: int) -> bytes:
    try:
        return bytes(f.read(n))
    except (OSError, EOFError):  # not gzip after all
        return b""


def _kind(head: bytes) -> str:
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if len(head) >= 4 and head[:2] == b"\x00\x00" and head[3] in (1, 2, 3, 4):
        return "idx"
    return "image"


def _idx(path: Path, reading: Reading) -> ImageSource:
    try:
        count = read_idx_header(path).count
    except DataFileError as exc:
        raise InputError(str(exc)) from None
    name = data_name(path)

    def rows(bs: int) -> Iterator[SourceBatch]:
        start = 0
        try:
            for chunk in iter_idx_images(path, bs):
                yield uniform_rows(reading.arrays(chunk, name), name, start)
                start += len(chunk)
        except DataFileError as exc:  # the runtime's callers catch InputError
            raise InputError(str(exc)) from None

    return ImageSource(path, "idx", count, rows)


def _npy(path: Path, reading: Reading) -> ImageSource:
    where = display_name(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError) as exc:  # Overflow: negative dims
        raise InputError(f"{where}: not a readable .npy array ({exc})") from None
    # Check shape and dtype now, so a bad file fails before any work is done.
    array = array.reshape(reading.batch_shape(array.shape, where))
    try:
        reading.arrays(array[:0])
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    name = data_name(path)

    def rows(bs: int) -> Iterator[SourceBatch]:
        for start in range(0, len(array), bs):
            try:
                images = reading.arrays(np.asarray(array[start : start + bs]), name)
            except InputError as exc:
                raise InputError(f"{where}: images {start}..{start + bs - 1}: {exc}") from None
            yield uniform_rows(images, name, start)

    return ImageSource(path, "npy", len(array), rows)


def _folder(path: Path, reading: Reading, skip_bad: bool, recursive: bool) -> ImageSource:
    listing = list_folder(path, recursive)
    hint = (
        f" (in folder {display_name(path)}; skip such files with skip_bad=True, "
        "or --skip-bad on the command line)"
    )
    source = _files(listing.files, reading, skip_bad, path, "folder", hint)
    source.ignored, source.subfolders = listing.ignored, listing.subfolders
    return source


def _files(
    files: list[Path], reading: Reading, skip_bad: bool, path: Path, kind: str, hint: str = ""
) -> ImageSource:
    """Each file one image, batched."""
    source = ImageSource(path, kind, len(files), lambda bs: iter(()), per_file=kind != "image")

    def rows(bs: int) -> Iterator[SourceBatch]:
        for start in range(0, len(files), bs):
            images, errors = [], []
            for file in files[start : start + bs]:
                try:
                    images.append(load_image(file, reading=reading))
                    errors.append(None)
                except InputError as exc:
                    if not skip_bad:
                        raise InputError(f"{exc}{hint}") from None
                    source.skipped.append((file, str(exc)))
                    errors.append(str(exc))
            part = files[start : start + bs]
            stack = np.stack(images)[:, None] if images else np.zeros((0, 1, 28, 28), np.float32)
            yield SourceBatch(
                stack, [data_name(f) for f in part], np.zeros(len(part), np.int64), errors
            )

    source._rows = rows
    return source


def _many(
    paths: list[Any],
    reading: Reading,
    skip_bad: bool,
    recursive: bool,
    column: str | None,
    id_column: str | None,
) -> ImageSource:
    """Several inputs one after the other; runs of image files are batched together."""
    if not paths:
        raise InputError("no input given")
    if len(paths) == 1:
        return _open(paths[0], reading, skip_bad, recursive, column, id_column)
    parts: list[ImageSource] = []
    run: list[Path] = []
    for p in paths:
        one = _open(p, reading, skip_bad, recursive, column, id_column)
        if one.kind == "image":
            run.append(one.path)
            continue
        if run:
            parts.append(_files(run, reading, skip_bad, run[0], "files", LIST_HINT))
            run = []
        parts.append(one)
    if run:
        parts.append(_files(run, reading, skip_bad, run[0], "files", LIST_HINT))
    counts = [p.count for p in parts]
    count = -1 if min(counts) < 0 else sum(counts)
    source = ImageSource(Path(paths[0]), "files", count, lambda bs: iter(()), per_file=True)
    for p in parts:
        source.ignored += p.ignored
        source.subfolders += p.subfolders
    if len({p.id_name for p in parts}) == 1:  # every part keyed by the same id column
        source.id_name = parts[0].id_name

    def rows(bs: int) -> Iterator[SourceBatch]:
        for part in parts:
            yield from part.rows(bs)
            source.skipped.extend(part.skipped)

    source._rows = rows
    return source


# ---- standard input -------------------------------------------------------------------------


def _stdin(reading: Reading) -> ImageSource:
    """Standard input: a .npy array or an IDX stream (gz or raw), streamed, or one image."""
    stream = sys.stdin.buffer
    head = stream.read(len(NPY_MAGIC))
    f: BinaryIO = Prefixed(head, stream)
    if head[:2] == GZIP_MAGIC:
        f = gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[assignment]
        head = f.read(4)
        f = Prefixed(head, f)
    kind = _kind(head)
    where = "<stdin>"
    if kind == "parquet":
        raise InputError("<stdin>: Parquet cannot be read from a stream; give the file's path")
    if kind == "npy":
        return _npy_stream(f, reading)
    if kind == "idx":

        def idx_rows(bs: int) -> Iterator[SourceBatch]:
            start = 0
            try:
                for chunk in iter_idx_stream(f, where, bs):
                    yield uniform_rows(reading.arrays(chunk, where), STDIN, start)
                    start += len(chunk)
            except DataFileError as exc:
                raise InputError(str(exc)) from None

        return ImageSource(Path(STDIN), "stdin", -1, idx_rows)
    data = f.read(STDIN_IMAGE_LIMIT + 1)
    if len(data) > STDIN_IMAGE_LIMIT:
        raise InputError(f"{where}: more than {STDIN_IMAGE_LIMIT >> 20} MiB for one image")
    if not data:
        raise InputError(f"{where}: no data")
    image = decode_image(data, where, reading=reading)
    return ImageSource(
        Path(STDIN), "stdin", 1, lambda bs: iter([uniform_rows(image[None, None], STDIN, 0)])
    )


def _npy_stream(f: BinaryIO, reading: Reading) -> ImageSource:
    where = "<stdin>"
    shape, dtype = read_npy_header(f, where)
    shape = reading.batch_shape(shape, where)
    try:
        reading.arrays(np.zeros((0, *shape[1:]), dtype))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    row_bytes = dtype.itemsize * int(np.prod(shape[1:]))

    def rows(bs: int) -> Iterator[SourceBatch]:
        for start in range(0, shape[0], bs):
            n = min(bs, shape[0] - start)
            data = f.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise InputError(f"{where}: truncated .npy: header promises {shape[0]} images")
            chunk = np.frombuffer(data, dtype).reshape(n, *shape[1:])
            try:
                images = reading.arrays(chunk, where)
            except InputError as exc:
                raise InputError(f"{where}: images {start}..{start + n - 1}: {exc}") from None
            yield uniform_rows(images, STDIN, start)

    return ImageSource(Path(STDIN), "stdin", shape[0], rows)
