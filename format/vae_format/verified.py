"""Reading a model directory's files only through the manifest's size and sha256.

An engine is handed the bytes that were checked, never a path, so a file cannot change
between the check and the load, and nothing the manifest did not verify is ever opened.
A file is looked at (``stat``) before it is read: only a regular file of the listed size
is opened, so a FIFO, a device or a huge sparse file costs nothing and never blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFormatError
from .graph_policy import check_graph_bytes
from .manifest import FileEntry, Manifest
from .onnx_wire import Model
from .regular_file import read_regular_file


@dataclass(frozen=True)
class VerifiedGraph:
    """A graph's verified bytes, its external-data files' verified bytes (by manifest
    path), and the model as the policy read it."""

    path: Path
    data: bytes
    external: dict[str, bytes]
    model: Model


def read_graph(manifest: Manifest, role: str, variant: str | None = None) -> VerifiedGraph:
    """The graph ``role`` of ``variant`` (None: the default graphs) and its external data,
    every byte verified and the graph held to vae_format.graph_policy; what an engine gets."""
    rel = manifest.graph_files(variant)[role]
    external = {f: read_verified(manifest, f) for f in manifest.external_files(role, variant)}
    data = read_verified(manifest, rel)
    path = manifest.directory / rel
    return VerifiedGraph(path, data, external, check_graph_bytes(data, external, path))


def read_verified(manifest: Manifest, rel: str) -> bytes:
    """The bytes of file ``rel`` once its location, type, size and sha256 are checked."""
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
        data = read_regular_file(path, entry.bytes)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing (listed in manifest.json)") from None
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
