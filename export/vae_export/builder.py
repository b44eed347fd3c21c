"""The export builder: every model directory is written through it, the first export and
each variant added later.

A change is staged in a sibling folder (an empty one, or a copy of the directory being
changed; see vae_format.atomic_dir). Files are added there with their manifest entries,
the manifest is written, the runtime loads the result back (the format's consumer checks
the whole contract), and only then is the folder swapped into place. An exception
anywhere leaves the target as it was, byte for byte, and no staging folder behind; a
crash in the swap is recovered by the next export or load of that path.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vae_export.errors import ExportError, ValidationError
from vae_format.atomic_dir import recover, staged_dir
from vae_format.contract import MANIFEST_FILE
from vae_format.manifest import FileEntry, Manifest
from vae_runtime import VAE
from vae_runtime.errors import VAEError


class ModelDirBuilder:
    """A staged model directory: ``root`` on disk and the manifest that will describe it.

    A new directory has no manifest until :meth:`create_manifest`; the files added before
    are listed in it then. Every change goes through vae_format's checked Manifest."""

    def __init__(self, root: Path, manifest: Manifest | None = None) -> None:
        self.root = root
        self._manifest = manifest
        self._files: dict[str, FileEntry] = {}
        self._variants: list[str] = []

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("the manifest is created after the files (create_manifest)")
        return self._manifest

    def add_bytes(self, rel: str, data: bytes, role: str) -> Path:
        """Write ``data`` to ``rel`` and list it (size, sha256, role)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._list(rel, FileEntry.of_bytes(data, role))
        return path

    def add_copy(self, rel: str, src: Path, role: str) -> Path:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, self.root / rel)
        return self.add_existing(rel, role)

    def add_existing(self, rel: str, role: str) -> Path:
        """List a file written into ``root`` by other means (e.g. a quantizer)."""
        self._list(rel, FileEntry.of_file(self.root / rel, role))
        return self.root / rel

    def _list(self, rel: str, entry: FileEntry) -> None:
        self._files[rel] = entry
        if self._manifest is not None:
            self._manifest = self._manifest.with_files({rel: entry})

    def create_manifest(self, **fields: Any) -> Manifest:
        """The manifest of a new directory (``Manifest.create``'s fields but ``files``)."""
        self._manifest = Manifest.create(self.root, files=self._files, **fields)
        return self._manifest

    def add_variant(self, name: str, files: Mapping[str, str], info: Mapping[str, Any]) -> None:
        """List variant ``name``: its graph per role (files already added) and what it is."""
        self._manifest = self.manifest.with_variant(name, files, **info)
        if name not in self._variants:
            self._variants.append(name)

    def set_section(self, key: str, value: Any) -> None:
        """An informational top-level section of the manifest, e.g. "quality"."""
        self._manifest = self.manifest.with_section(key, value)

    def load(self, variant: str | None = None) -> VAE:
        """The staged directory as the runtime sees it (the manifest is written first)."""
        self.manifest.write()
        return self._open(variant)

    def finish(self) -> None:
        """Write the manifest and load every graph set it lists back through the runtime."""
        self.manifest.write()
        for variant in (None, *self._variants):
            self._open(variant)

    def _open(self, variant: str | None) -> VAE:
        try:
            return VAE(self.root, variant=variant)
        except VAEError as exc:
            raise ValidationError(f"the runtime refused the exported directory: {exc}") from None


def check_target(out_dir: Path) -> None:
    """Refuse to replace anything but a model directory (or an empty folder)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).exists():
        raise ExportError(
            f"refusing to replace {out_dir}: it is not empty and holds no {MANIFEST_FILE} "
            "(not a model directory)"
        )


@contextlib.contextmanager
def new_model_dir(out_dir: Path) -> Iterator[ModelDirBuilder]:
    """Build ``out_dir`` from nothing; it replaces an existing model directory there."""
    recover(out_dir)  # an export that crashed mid-swap: finished before the target is judged
    check_target(out_dir)
    with staged_dir(out_dir) as root:
        builder = ModelDirBuilder(root)
        yield builder
        builder.finish()


@contextlib.contextmanager
def changed_model_dir(model_dir: Path) -> Iterator[ModelDirBuilder]:
    """Change a copy of ``model_dir`` (e.g. add a variant); swapped in if the block succeeds."""
    recover(model_dir)
    with staged_dir(model_dir, copy=True) as root:
        builder = ModelDirBuilder(root, Manifest.load(root))
        yield builder
        builder.finish()
