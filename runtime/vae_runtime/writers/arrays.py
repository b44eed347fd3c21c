"""Array outputs: ``.npy`` (the main column, streamed, with a sidecar naming each row's
source when rows come from separate files) and ``.npz`` (every column, spooled to
temporary files while streaming, zipped at the end). Memory stays at one batch."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InputError
from ..records import ResultBatch, Schema, cast_values
from ..streams import npy_header, reserved_npy_header
from .base import Output

COPY_BYTES = 1 << 22


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``emb.npy`` -> ``emb.sources.jsonl``: one JSON object per array row."""
    return Path(path).with_suffix(".sources.jsonl")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class NpyWriter(Output):
    """The main column as one C-ordered .npy array, rows appended as they come; the
    header is written first with room for any count and rewritten at the end."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        *,
        expected: int | None = None,
        with_sidecar: bool = False,
    ) -> None:
        column = schema.main
        if os.fspath(path) == "-" and expected is None:
            raise InputError(
                "a .npy on standard output needs the number of rows in advance, which this "
                "input does not give; write jsonl or csv to standard output instead"
            )
        super().__init__(path, schema)
        self.column, self.expected = column, expected
        self._header = reserved_npy_header(column.shape, column.dtype)
        first = (expected if self.to_stdout else 0, *column.shape)
        self.file.write(npy_header(first, column.dtype, None if self.to_stdout else self._header))
        self._sidecar: IO[str] | None = None
        if with_sidecar and not self.to_stdout:
            self._sidecar = self.sidecar(sidecar_path(path))

    def write(self, batch: ResultBatch) -> None:
        data = cast_values(batch.values[self.column.name], self.column.dtype)
        self.file.write(data.data)
        self.rows += len(data)
        if self._sidecar is not None:
            keys = batch.ok_keys()
            columns = [(k, keys[k]) for k in self.schema.keys]
            lines = (
                json.dumps({k: _plain(v[i]) for k, v in columns}, ensure_ascii=False)
                for i in range(len(data))
            )
            self._sidecar.write("".join(line + "\n" for line in lines))

    def finish(self) -> None:
        if self.to_stdout:
            if self.rows != self.expected:
                raise InputError(
                    f"wrote {self.rows} rows to standard output, its .npy header said "
                    f"{self.expected}"
                )
            return
        self.file.seek(0)
        shape = (self.rows, *self.column.shape)
        self.file.write(npy_header(shape, self.column.dtype, self._header))


class _Spool:
    """One npz member collected on disk: fixed-width rows, or strings (as JSON lines)."""

    def __init__(self, folder: Path) -> None:
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed in finish)
        self.rows = 0
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] = ()
        self.width = 1  # longest string

    def add(self, values: Any) -> None:
        if hasattr(values, "to_pylist"):  # a pyarrow array
            values = values.to_pylist()
        if isinstance(values, np.ndarray) and values.dtype.kind in "iufb":
            self.dtype, self.shape = values.dtype, values.shape[1:]
            self.file.write(np.ascontiguousarray(values).data)
        elif len(values) and all(isinstance(v, (int, np.integer)) for v in values):
            self.dtype = np.dtype(np.int64)
            self.file.write(np.asarray(values, np.int64).data)
        else:
            texts = [str(_plain(v)) for v in values]
            self.width = max([self.width, *map(len, texts)])
            self.file.write("".join(json.dumps(t) + "\n" for t in texts).encode("utf-8"))
        self.rows += len(values)

    def copy_to(self, out: IO[bytes]) -> None:
        self.file.seek(0)
        if self.dtype is not None or self.rows == 0:
            dtype = self.dtype if self.dtype is not None else np.dtype(np.float32)
            out.write(npy_header((self.rows, *self.shape), dtype))
            shutil.copyfileobj(self.file, out, COPY_BYTES)
            return
        dtype = np.dtype(f"<U{self.width}")
        out.write(npy_header((self.rows,), dtype))
        lines = (json.loads(line) for line in self.file)
        while chunk := [t for _, t in zip(range(8192), lines, strict=False)]:
            out.write(np.array(chunk, dtype).data)


class NpzWriter(Output):
    """Every key and value column as arrays of one .npz (uncompressed, as np.savez);
    skipped inputs have no row."""

    def __init__(self, path: str | os.PathLike[str], schema: Schema, **_: Any) -> None:
        if os.fspath(path) == "-":
            raise InputError(".npz cannot be written to standard output; give a file name")
        super().__init__(path, schema)
        folder = Path(path).resolve().parent
        names = [*schema.keys, *(c.name for c in schema.values)]
        self._spools = {name: _Spool(folder) for name in names}
        for column in schema.values:  # so an empty output still has the right shapes
            self._spools[column.name].dtype = np.dtype(column.dtype)
            self._spools[column.name].shape = column.shape

    def write(self, batch: ResultBatch) -> None:
        for name, values in batch.ok_keys().items():
            self._spools[name].add(values)
        for column in self.schema.values:
            data = cast_values(batch.values[column.name], column.dtype)
            self._spools[column.name].add(data)
        self.rows += len(batch.values[self.schema.main.name])

    def finish(self) -> None:
        with zipfile.ZipFile(self.file, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, spool in self._spools.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    spool.copy_to(member)  # type: ignore[arg-type]
                spool.file.close()

    def abort(self, exc: BaseException) -> None:
        for spool in self._spools.values():
            spool.file.close()
        super().abort(exc)
