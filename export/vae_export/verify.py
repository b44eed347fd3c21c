"""Re-check an existing model directory against the checkpoints it carries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vae_export import validate
from vae_export.errors import ExportError
from vae_export.exporter import CHECKPOINT_SUBDIR, prior_latents, test_images
from vae_export.manifest import sha256_file
from vae_train.checkpoint import Checkpoint, CheckpointError, load_checkpoint


def read_manifest(model_dir: Path) -> dict:
    path = model_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{model_dir} is not a model directory (no manifest.json)") from None
    except ValueError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None


def check_files(model_dir: Path, manifest: dict) -> None:
    for rel, entry in manifest.get("files", {}).items():
        path = model_dir / rel
        if not path.is_file():
            raise ExportError(f"{path} is listed in the manifest but missing")
        if sha256_file(path) != entry.get("sha256"):
            raise ExportError(f"{path}: sha256 differs from the manifest (modified or damaged)")


def model_checkpoint(model_dir: Path, purpose: str) -> Checkpoint:
    """The PyTorch modules of the checkpoints a model directory carries."""
    try:
        return load_checkpoint(model_dir / CHECKPOINT_SUBDIR)
    except CheckpointError as exc:
        raise ExportError(f"cannot {purpose} {model_dir}: {exc}") from None


def verify_model_dir(
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    batch_sizes: Sequence[int] = validate.BATCH_SIZES,
    variant: str | None = None,
) -> list[validate.ParityRow]:
    """ORT (the directory's graphs) against PyTorch (its checkpoints), per batch size."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    check_files(model_dir, manifest)
    ckpt = model_checkpoint(model_dir, "verify")
    files = {role: manifest["graphs"][role]["file"] for role in ("encoder", "decoder")}
    if variant:
        try:
            files = manifest["variants"][variant]
        except KeyError:
            raise ExportError(f"{model_dir} has no variant {variant!r}") from None
    enc = validate.ort_session(str(model_dir / files["encoder"]))
    dec = validate.ort_session(str(model_dir / files["decoder"]))
    n = max(batch_sizes)
    latent_dim = int(manifest["latent_dim"])
    rows: list[validate.ParityRow] = []
    if data_dir is not None:
        images = test_images(manifest.get("dataset", {}).get("name") or "mnist", data_dir, n)
        rows += validate.encoder_parity(ckpt.encoder, enc, images, "test images", batch_sizes)
        rows += validate.likelihood_parity(ckpt.encoder, ckpt.decoder, dec, images,
                                           manifest["likelihood"], batch_sizes)  # fmt: skip
    noise = np.random.default_rng(1).random((n, 1, 28, 28), dtype=np.float32)
    rows += validate.encoder_parity(ckpt.encoder, enc, noise, "uniform noise", batch_sizes)
    latents = prior_latents(latent_dim, n)
    rows += validate.decoder_parity(ckpt.decoder, dec, latents, "N(0,I)", batch_sizes)
    return rows
