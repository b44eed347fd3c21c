"""Image outputs: a PNG grid of the first images (capped: a grid of a million images is
no picture), and a folder of one PNG per image, named by its number, with a sidecar
(JSON lines) saying which seed and index, or which input, each file holds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vae_format import grid
from vae_format.atomic import atomic_path, check_output, check_output_folder, fsync_dir, write_bytes

from ..errors import InputError
from ..names import display_name
from ..records import ResultBatch, Schema

GRID_MAX = 256  # images in a grid unless asked for more
NAME_DIGITS = 8  # 00000042.png: file names sort in index order up to 10^8 images


def png_name(number: int) -> str:
    return f"{number:0{NAME_DIGITS}d}.png"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class GridWriter:
    """The first ``limit`` images as one PNG grid of ``nrow`` columns."""

    def __init__(
        self, path: str | os.PathLike[str], schema: Schema, *, nrow: int = 8, limit: int = GRID_MAX
    ) -> None:
        if os.fspath(path) == "-":
            raise InputError("a PNG grid cannot be written to standard output; give a file")
        if Path(path).is_dir():
            raise InputError(f"{display_name(path)}: is a directory")
        check_output(path)  # written only at the end: checked now, before the work
        self.path, self.schema, self.nrow, self.limit = path, schema, nrow, limit
        self.name = display_name(path)
        self.rows = 0  # images seen
        self._images: list[np.ndarray] = []
        self._have = 0

    def write(self, batch: ResultBatch) -> None:
        images = batch.values[self.schema.main.name]
        take = images[: max(0, self.limit - self._have)]
        if len(take):
            self._images.append(np.asarray(take, np.float32))
            self._have += len(take)
        self.rows += len(images)

    @property
    def shown(self) -> int:
        return self._have

    def commit(self) -> None:
        if not self._images:
            raise InputError(f"{self.name}: no images to put in a grid")
        pixels = grid.make_grid(np.concatenate(self._images), self.nrow, 2)
        grid.save_png(pixels, self.path)

    def abort(self, exc: BaseException) -> None:
        self._images.clear()


class PngDirWriter:
    """One PNG per image in ``folder``, numbered from ``first``; a sidecar
    ``images-<first>.jsonl`` there has one line per file: its name and key columns. Each
    file is renamed into place whole; the folder is synced once at the end, and an aborted
    run removes the files it created."""

    def __init__(self, folder: str | os.PathLike[str], schema: Schema, *, first: int = 0) -> None:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{display_name(folder)}: exists and is not a folder")
        check_output_folder(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.schema, self.next = folder, schema, first
        self.name = display_name(folder)
        self.rows = 0
        self._created: list[Path] = []
        self._lines: list[str] = []
        self._sidecar = folder / f"images-{first:0{NAME_DIGITS}d}.jsonl"

    def write(self, batch: ResultBatch) -> None:
        images = grid.to_pixels(batch.values[self.schema.main.name])
        keys = batch.ok_keys()
        for i, image in enumerate(images.reshape(len(images), 28, 28)):
            file = self.folder / png_name(self.next)
            if not file.exists():
                self._created.append(file)
            with atomic_path(file, durable=False) as tmp:
                _save_png(image, tmp)
            row = {"file": file.name, **{k: _plain(v[i]) for k, v in keys.items()}}
            self._lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            self.next += 1
        self.rows += len(images)

    def commit(self) -> None:
        write_bytes(self._sidecar, "".join(self._lines).encode("utf-8"))
        fsync_dir(self.folder)

    def abort(self, exc: BaseException) -> None:
        for file in self._created:
            file.unlink(missing_ok=True)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG")


class ReconstructionGridWriter(GridWriter):
    """The first ``limit`` originals (the batches' ``original`` values) each above its
    reconstruction, rows of ``nrow``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._originals: list[np.ndarray] = []

    def write(self, batch: ResultBatch) -> None:
        room = max(0, self.limit - self._have)
        self._originals.append(np.asarray(batch.values["original"][:room], np.float32))
        super().write(batch)

    def commit(self) -> None:
        from ..outputs import save_reconstruction_grid

        if not self._images:
            raise InputError(f"{self.name}: no images to put in a grid")
        originals = np.concatenate(self._originals)
        save_reconstruction_grid(originals, np.concatenate(self._images), self.path, self.nrow)
