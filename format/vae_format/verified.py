"""Reading a model directory's files only through the manifest's size and sha256.

An engine is handed the bytes that were checked, never a path, so a file cannot change
between the check and the load, and nothing the manifest did not verify is ever opened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .errors import ModelFormatError
from .manifest import FileEntry, Manifest


def read_verified(manifest: Manifest, rel: str) -> bytes:
    """The bytes of file ``rel`` once its location, size and sha256 are checked."""
    entry = manifest.files[rel]
    path = manifest.directory / rel
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
        raise ModelFormatError(f"{path}: cannot resolve ({exc})") from None
    if not real.is_relative_to(manifest.directory.resolve()):
        raise ModelFormatError(
            f"{path}: resolves to {real}, outside the model directory (symlink?)"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing (listed in manifest.json)") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: not readable ({exc.strerror or exc})") from None
    _check_bytes(data, entry, str(path))
    return data


def verify_files(manifest: Manifest, rels: Iterable[str] | None = None) -> None:
    """Check the size and sha256 of ``rels`` (default: every listed file) without keeping
    their bytes; the first mismatch is a ModelFormatError naming the file."""
    for rel in manifest.files if rels is None else rels:
        read_verified(manifest, rel)


def _check_bytes(data: bytes, entry: FileEntry, where: str) -> None:
    if len(data) != entry.bytes:
        raise ModelFormatError(
            f"{where}: size is {len(data)} bytes, manifest.json says {entry.bytes} "
            "(truncated or modified)"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ModelFormatError(
            f"{where}: sha256 {digest} does not match manifest.json ({entry.sha256}); "
            "the file was modified or corrupted"
        )
