"""Parquet tables in and out, in row batches (needs pyarrow: the ``parquet`` extra).

In: an image column holding encoded image bytes (PNG, JPEG, ...), Hugging Face ``Image``
structs ``{bytes, path}``, or 784-long uint8 lists (28x28 pixels, row-major), and
optionally an id column carried to the outputs. Out: key columns (the id column, or
``source`` and ``index``), ``status``/``error`` where inputs may be skipped, and each value
as a column: vectors as fixed-size lists (``embedding``: float32 x L), numbers as numbers.

The functions on pyarrow arrays (:func:`decode_images`, :func:`result_table`) hold no
file state, so a distributed engine can call them on its own batches (e.g. Ray Data's
``map_batches``) and get exactly what ``vae-run`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .arrays import PIXELS
from .errors import InputError
from .images import decode_image
from .names import data_name, display_name
from .reading import Reading
from .records import ImageSource, ResultBatch, Schema, SourceBatch, cast_values
from .writers.base import Output

if TYPE_CHECKING:
    import pyarrow as pa

EXTRA_HINT = "pip install 'vae-onnx[parquet]'"
ROW_GROUP_BYTES = 32 << 20  # rows are buffered into row groups of about this size
IMAGE_TYPES = "encoded image bytes, {bytes, path} image structs or 784-long uint8 lists"


def require_pyarrow() -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise InputError(f"Parquet needs pyarrow, which is not installed: {EXTRA_HINT}") from None
    return pa


# ---- reading -------------------------------------------------------------------------------


def image_kind(type_: pa.DataType) -> str | None:
    """ "bytes", "struct" or "pixels" for a column type that holds images, else None."""
    pa = require_pyarrow()
    t = pa.types
    if t.is_binary(type_) or t.is_large_binary(type_):
        return "bytes"
    if t.is_struct(type_):
        names = [type_.field(i).name for i in range(type_.num_fields)]
        if "bytes" in names:
            field = type_.field(names.index("bytes")).type
            return "struct" if t.is_binary(field) or t.is_large_binary(field) else None
    is_list = t.is_list(type_) or t.is_large_list(type_) or t.is_fixed_size_list(type_)
    if is_list and t.is_uint8(type_.value_type):
        return "pixels"
    return None


def pick_image_column(schema: pa.Schema, column: str | None, where: str) -> str:
    """``column`` checked, or the only column that can hold images."""
    if column is not None:
        if column not in schema.names:
            raise InputError(f"{where}: no column {column!r} (columns: {', '.join(schema.names)})")
        if image_kind(schema.field(column).type) is None:
            raise InputError(
                f"{where}: column {column!r} has type {schema.field(column).type}; "
                f"expected {IMAGE_TYPES}"
            )
        return column
    found = [f.name for f in schema if image_kind(f.type) is not None]
    if len(found) != 1:
        what = "no column" if not found else f"several columns ({', '.join(found)})"
        raise InputError(f"{where}: {what} can hold images; name one with --column / column=")
    return found[0]


def decode_images(
    array: pa.Array,
    where: str,
    start: int = 0,
    invert: bool = False,
    reading: Reading | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """An image column's values as float32 (k, 1, 28, 28), with one error (or None) per
    row; the images are those of the rows without error, in order. ``start`` numbers the
    rows in messages. ``reading``: the model's preprocessing (None: as before, ``invert``)."""
    pa = require_pyarrow()
    reading = Reading(None, bool(invert)) if reading is None else reading
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = image_kind(array.type)
    if kind == "pixels":
        return _pixels(array, where, start, reading)
    if kind == "struct":
        array = array.field("bytes") if array.null_count == 0 else _struct_bytes(array)
    elif kind is None:
        raise InputError(f"{where}: column of type {array.type}; expected {IMAGE_TYPES}")
    images, errors = [], []
    for i, data in enumerate(array.to_pylist()):
        if data is None:
            errors.append(f"{where}: row {start + i}: no image bytes")
            continue
        try:
            images.append(decode_image(data, f"{where}: row {start + i}", reading=reading))
            errors.append(None)
        except InputError as exc:
            errors.append(str(exc))
    stack = np.stack(images)[:, None] if images else np.zeros((0, 1, 28, 28), np.float32)
    return stack, errors


def _struct_bytes(array: pa.Array) -> pa.Array:
    """The ``bytes`` field, null where the struct itself is null."""
    import pyarrow.compute as pc

    return pc.if_else(array.is_valid(), array.field("bytes"), None)


def _pixels(
    array: pa.Array, where: str, start: int, reading: Reading
) -> tuple[np.ndarray, list[str | None]]:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    good = valid & (lengths == PIXELS)
    errors: list[str | None] = [None] * len(array)
    for i in np.flatnonzero(~good):
        what = "no image (null)" if not valid[i] else f"{int(lengths[i])} values, expected 784"
        errors[i] = f"{where}: row {start + i}: {what}"
    if good.all():
        flat = array.flatten().to_numpy(zero_copy_only=False)
    else:
        flat = array.filter(pa_mask(good)).flatten().to_numpy(zero_copy_only=False)
    pixels = np.asarray(flat, np.uint8).reshape(-1, 28, 28)
    return reading.arrays(pixels, where), errors


def pa_mask(mask: np.ndarray) -> pa.Array:
    return require_pyarrow().array(mask, type=require_pyarrow().bool_())


def open_parquet(
    path: str | os.PathLike[str],
    column: str | None = None,
    id_column: str | None = None,
    *,
    invert: bool = False,
    skip_bad: bool = False,
    reading: Reading | None = None,
) -> ImageSource:
    """A Parquet file as an :class:`ImageSource`, read ``batch_size`` rows at a time."""
    require_pyarrow()
    import pyarrow.parquet as pq

    reading = Reading(None, bool(invert)) if reading is None else reading
    path = Path(path)
    where = display_name(path)
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(f"{where}: not a readable Parquet file ({exc})") from None
    schema = table.schema_arrow
    column = pick_image_column(schema, column, where)
    if id_column is not None and id_column not in schema.names:
        names = ", ".join(schema.names)
        raise InputError(f"{where}: no id column {id_column!r} (columns: {names})")
    if id_column == column:
        raise InputError(f"{where}: the id column cannot be the image column {column!r}")
    name = data_name(path)
    source = ImageSource(path, "parquet", table.metadata.num_rows, lambda bs: iter(()))
    source.id_name = id_column

    def rows(bs: int) -> Iterator[SourceBatch]:
        start = 0
        wanted = [column] + ([id_column] if id_column else [])
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=bs, columns=wanted):
                images, errors = decode_images(batch.column(column), where, start, reading=reading)
                for error in errors:
                    if error is not None and not skip_bad:
                        raise InputError(f"{error} (skip such rows with --skip-bad)")
                    if error is not None:
                        source.skipped.append((path, error))
                n = batch.num_rows
                ids = batch.column(id_column) if id_column else None
                yield SourceBatch(
                    images, [name] * n, np.arange(start, start + n, dtype=np.int64), errors, ids
                )
                start += n
        except InputError:
            raise
        except Exception as exc:  # a damaged page, an unreadable column
            raise InputError(f"{where}: cannot read row batch at row {start} ({exc})") from None

    source._rows = rows
    return source


# ---- writing -------------------------------------------------------------------------------


def arrow_type(column: Any) -> pa.DataType:
    """The Arrow type of a value :class:`~vae_runtime.records.Column`."""
    pa = require_pyarrow()
    scalar = pa.from_numpy_dtype(np.dtype(column.dtype))
    return scalar if column.shape == () else pa.list_(scalar, column.width)


def result_table(batch: ResultBatch, schema: Schema) -> pa.Table:
    """A :class:`ResultBatch` as an Arrow table: key columns, ``status`` and ``error``
    (when the schema has them), and one column per value; rows of skipped inputs have
    null values."""
    pa = require_pyarrow()
    n = len(batch)
    ok = batch.ok
    columns: dict[str, Any] = {}
    for name in schema.keys:
        values = batch.keys[name]
        columns[name] = (
            values
            if isinstance(values, (pa.Array, pa.ChunkedArray))
            else (pa.array(values.tolist() if isinstance(values, np.ndarray) else list(values)))
        )
    if schema.status:
        columns["status"] = pa.array(["ok" if k else "skipped" for k in ok], pa.string())
        columns["error"] = pa.array(batch.errors or [None] * n, pa.string())
    for column in schema.values:
        data = cast_values(batch.values[column.name], column.dtype).reshape(-1, column.width)
        if not ok.all():
            full = np.zeros((n, column.width), data.dtype)
            full[ok] = data
            data = full
        mask = None if ok.all() else pa_mask(~ok)
        if column.shape == ():
            columns[column.name] = pa.array(data[:, 0], mask=None if mask is None else ~ok)
        else:
            flat = pa.array(data.reshape(-1))
            columns[column.name] = pa.FixedSizeListArray.from_arrays(flat, column.width, mask=mask)
    return pa.table(columns)


class ParquetWriter(Output):
    """Rows as a Parquet file (zstd), in row groups of about 32 MB."""

    def __init__(self, path: str | os.PathLike[str], schema: Schema, **_: Any) -> None:
        require_pyarrow()
        if os.fspath(path) == "-":
            raise InputError("Parquet cannot be written to standard output; give a file name")
        super().__init__(path, schema)
        self._writer: Any = None
        self._pending: list[pa.Table] = []
        self._bytes = 0

    def write(self, batch: ResultBatch) -> None:
        table = result_table(batch, self.schema)
        self._pending.append(table)
        self._bytes += table.nbytes
        self.rows += int(batch.ok.sum())
        if self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.file, table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._pending, self._bytes = [], 0

    def finish(self) -> None:
        if self._writer is None and not self._pending:  # no rows: still a valid, typed file
            self._pending.append(self._empty())
        self._flush()
        self._writer.close()

    def _empty(self) -> pa.Table:
        pa = require_pyarrow()
        fields = [
            pa.field(k, pa.int64() if k in ("index", "seed") else pa.string())
            for k in self.schema.keys
        ]
        if self.schema.status:
            fields += [pa.field("status", pa.string()), pa.field("error", pa.string())]
        fields += [pa.field(c.name, arrow_type(c)) for c in self.schema.values]
        return pa.schema(fields).empty_table()
