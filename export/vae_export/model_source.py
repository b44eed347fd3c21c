"""A model directory as the starting point of a check, a benchmark or a variant: its
manifest, with every listed file verified, and the PyTorch checkpoints it carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_export import manifest as manifest_doc
from vae_export.errors import ExportError
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
    path: Path
    manifest: dict[str, Any]
    checkpoint: Checkpoint

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def dataset(self) -> str:
        return self.manifest.get("dataset", {}).get("name") or "mnist"

    def graph_files(self, variant: str | None = None) -> dict[str, str]:
        """role -> relative graph file of ``variant`` (None: the default graphs)."""
        if variant is None:
            return {role: self.manifest["graphs"][role]["file"] for role in ("encoder", "decoder")}
        try:
            return dict(self.manifest["variants"][variant])
        except KeyError:
            raise ExportError(f"{self.path} has no variant {variant!r}") from None


def check_files(model_dir: Path, manifest: dict[str, Any]) -> None:
    for rel, entry in manifest.get("files", {}).items():
        path = model_dir / rel
        if not path.is_file():
            raise ExportError(f"{path} is listed in the manifest but missing")
        if manifest_doc.sha256_file(path) != entry.get("sha256"):
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
    """``model_dir``'s verified manifest and checkpoints; ``purpose`` goes in errors."""
    model_dir = Path(model_dir)
    manifest = manifest_doc.read(model_dir / "manifest.json")
    check_files(model_dir, manifest)
    return ModelSource(model_dir, manifest, model_checkpoint(model_dir, purpose))
