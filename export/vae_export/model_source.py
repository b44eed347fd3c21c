"""A model directory as the starting point of a check, a benchmark or a variant: its
manifest (read with every check of vae_format), every listed file verified, and the
PyTorch checkpoints it carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_export.errors import ExportError
from vae_format.manifest import FileEntry, Manifest, likelihood_section
from vae_train.checkpoint import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
)

CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_FILES = (ENCODER_FILE, DECODER_FILE, CONFIG_FILE)


@dataclass
class ModelSource:
    manifest: Manifest
    checkpoint: Checkpoint

    @property
    def path(self) -> Path:
        return self.manifest.directory

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def dataset(self) -> str:
        return self.manifest.section("dataset", {}).get("name") or "mnist"

    @property
    def likelihood(self) -> dict[str, Any]:
        return likelihood_section(self.manifest.likelihood, self.manifest.sigma)

    def graph_files(self, variant: str | None = None) -> dict[str, str]:
        """role -> relative graph file of ``variant`` (None: the default graphs)."""
        return self.manifest.graph_files(variant)

    def fp32_graph_bytes(self, role: str) -> int:
        """The size of a default graph: its file plus the checkpoint it reads weights from."""
        files = (self.manifest.graphs[role], *self.manifest.external_files(role))
        return sum((self.path / f).stat().st_size for f in files)


def check_files(manifest: Manifest) -> None:
    """Every listed file present with the recorded size and sha256 (hashed in blocks)."""
    for rel, entry in manifest.files.items():
        path = manifest.directory / rel
        if not path.is_file():
            raise ExportError(f"{path} is listed in the manifest but missing")
        if FileEntry.of_file(path, entry.role) != entry:
            raise ExportError(f"{path}: sha256 differs from the manifest (modified or damaged)")


def run_checkpoint(path: str | Path, which: str = "best") -> Checkpoint:
    """The checkpoint of a run directory (or a checkpoint folder) to export."""
    try:
        return load_checkpoint(path, which)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None


def model_checkpoint(model_dir: Path, purpose: str) -> Checkpoint:
    """The PyTorch modules of the checkpoints a model directory carries."""
    try:
        return load_checkpoint(model_dir / CHECKPOINT_SUBDIR)
    except CheckpointError as exc:
        raise ExportError(f"cannot {purpose} {model_dir}: {exc}") from None


def open_model_dir(model_dir: str | Path, purpose: str) -> ModelSource:
    """``model_dir``'s checked manifest, its files verified, and its checkpoints;
    ``purpose`` (e.g. "verify") goes into the errors."""
    manifest = Manifest.load(model_dir)
    check_files(manifest)
    return ModelSource(manifest, model_checkpoint(manifest.directory, purpose))
