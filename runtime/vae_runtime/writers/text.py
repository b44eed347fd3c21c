"""Text outputs, one line per input row, skipped inputs included (``status`` "skipped"
with the ``error``): ``.jsonl`` (one JSON object per line) and ``.csv`` (a header, vector
columns flattened as ``embedding_0 ...``). Floats are written with enough digits to read
back the same float32 (9 significant) or float64 (shortest round trip)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..records import Column, ResultBatch, cast_values
from .base import Output


def _number_text(column: Column) -> Any:
    if column.dtype == np.float32:
        return "{:.9g}".format
    if column.dtype.kind == "f":
        return repr
    return str


def _flat_values(batch: ResultBatch, columns: tuple[Column, ...]) -> dict[str, np.ndarray]:
    return {
        c.name: cast_values(batch.values[c.name], c.dtype).reshape(-1, c.width) for c in columns
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _key_lists(batch: ResultBatch) -> dict[str, list[Any]]:
    out = {}
    for name, values in batch.keys.items():
        if hasattr(values, "to_pylist"):  # a pyarrow array
            out[name] = values.to_pylist()
        elif isinstance(values, np.ndarray):
            out[name] = values.tolist()
        else:
            out[name] = [_plain(v) for v in values]
    return out


def _rows(batch: ResultBatch) -> Iterator[tuple[int, str | None, int]]:
    """(row, error, value row or -1) for each row of the batch."""
    errors = batch.errors or [None] * len(batch)
    value_row = 0
    for row, error in enumerate(errors):
        yield row, error, (value_row if error is None else -1)
        if error is None:
            value_row += 1


class JsonlWriter(Output):
    binary = False

    def write(self, batch: ResultBatch) -> None:
        keys = _key_lists(batch)
        columns = self.schema.values
        flat = _flat_values(batch, columns)
        fmt = {c.name: _number_text(c) for c in columns}
        lines = []
        for row, error, at in _rows(batch):
            head = {k: keys[k][row] for k in self.schema.keys}
            if self.schema.status:
                head["status"] = "ok" if error is None else "skipped"
                if error is not None:
                    head["error"] = error
            text = json.dumps(head, ensure_ascii=False)[:-1]
            for c in columns:
                if at < 0:
                    value = "null"
                elif c.shape == ():
                    value = fmt[c.name](flat[c.name][at, 0].item())
                else:
                    value = "[" + ",".join(map(fmt[c.name], flat[c.name][at].tolist())) + "]"
                text += f', "{c.name}": {value}'
            lines.append(text + "}\n")
        self.file.write("".join(lines))
        self.rows += sum(1 for _, e, _ in _rows(batch) if e is None)


class CsvWriter(Output):
    binary = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._csv = csv.writer(self.file, lineterminator="\n")
        header = list(self.schema.keys)
        if self.schema.status:
            header += ["status", "error"]
        for c in self.schema.values:
            header += [c.name] if c.shape == () else [f"{c.name}_{i}" for i in range(c.width)]
        self._csv.writerow(header)

    def write(self, batch: ResultBatch) -> None:
        keys = _key_lists(batch)
        columns = self.schema.values
        flat = _flat_values(batch, columns)
        fmt = {c.name: _number_text(c) for c in columns}
        rows = []
        for row, error, at in _rows(batch):
            line = [keys[k][row] for k in self.schema.keys]
            if self.schema.status:
                line += ["ok", ""] if error is None else ["skipped", error]
            for c in columns:
                if at < 0:
                    line += [""] * c.width
                else:
                    line += map(fmt[c.name], flat[c.name][at].tolist())
            rows.append(line)
            self.rows += error is None
        self._csv.writerows(rows)
