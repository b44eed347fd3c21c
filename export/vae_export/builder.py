"""The export builder: every model directory is written through it, the first export and
each variant added later.

A change is staged in a sibling folder (an empty one, or a copy of the directory being
changed). Files are added there with their manifest entries, the manifest is written, the
runtime loads the result back (the format's consumer checks the whole contract), and only
then is the folder swapped into place. An exception anywhere leaves the target as it was,
byte for byte, and no staging folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vae_export import manifest as manifest_doc
from vae_export.errors import ExportError, ValidationError
from vae_runtime import VAE
from vae_runtime.errors import VAEError

MANIFEST = "manifest.json"


class ModelDirBuilder:
    """A staged model directory: ``root`` on disk and the manifest that will describe it."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._variants: list[str] = []

    def add_bytes(self, rel: str, data: bytes, role: str) -> Path:
        """Write ``data`` to ``rel`` and list it in the manifest with its sha256."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.add_existing(rel, role)

    def add_copy(self, rel: str, src: Path, role: str) -> Path:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, self.root / rel)
        return self.add_existing(rel, role)

    def add_existing(self, rel: str, role: str) -> Path:
        """List a file written into ``root`` by other means (e.g. a quantizer)."""
        self.manifest.setdefault("files", {})[rel] = manifest_doc.file_entry(self.root, rel, role)
        return self.root / rel

    def add_variant(self, name: str, files: Mapping[str, str], info: Mapping[str, Any]) -> None:
        """List variant ``name``: its graph per role (files already added) and what it is."""
        self.manifest.setdefault("variants", {})[name] = {**files, **info}
        if name not in self._variants:
            self._variants.append(name)

    def write_manifest(self) -> None:
        manifest_doc.write(self.root / MANIFEST, self.manifest)

    def load(self, variant: str | None = None) -> VAE:
        """The staged directory as the runtime sees it (the manifest is written first)."""
        self.write_manifest()
        try:
            return VAE(self.root, variant=variant)
        except VAEError as exc:
            raise ValidationError(f"the runtime refused the exported directory: {exc}") from None

    def finish(self) -> None:
        """Write the manifest and load every graph set it lists back through the runtime."""
        for variant in (None, *self._variants):
            self.load(variant)


def check_target(out_dir: Path) -> None:
    """Refuse to replace anything but a model directory (or an empty folder)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ExportError(
            f"refusing to replace {out_dir}: it is not empty and holds no {MANIFEST} "
            "(not a model directory)"
        )


@contextlib.contextmanager
def new_model_dir(out_dir: Path, manifest: dict[str, Any]) -> Iterator[ModelDirBuilder]:
    """Build ``out_dir`` from nothing; it replaces an existing model directory there."""
    check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staged(out_dir, copy=False) as root:
        root.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a model directory is shared
        builder = ModelDirBuilder(root, manifest)
        yield builder
        builder.finish()


@contextlib.contextmanager
def changed_model_dir(model_dir: Path) -> Iterator[ModelDirBuilder]:
    """Change a copy of ``model_dir`` (e.g. add a variant); swapped in if the block succeeds."""
    with _staged(model_dir, copy=True) as root:
        builder = ModelDirBuilder(root, manifest_doc.read(root / MANIFEST))
        yield builder
        builder.finish()


@contextlib.contextmanager
def _staged(target: Path, copy: bool) -> Iterator[Path]:
    """A folder beside ``target`` (empty, or a copy of it), swapped into place when the block
    ends, removed if it raises."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if copy:
            tmp.rmdir()
            shutil.copytree(target, tmp)
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    backup.rmdir()
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
