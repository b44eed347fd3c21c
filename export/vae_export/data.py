"""The data that export checks run on: dataset images and draws from the prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vae_export.errors import ExportError
from vae_format.datasets import read_split
from vae_format.errors import DataFileError


def split_images(dataset: str, split: str, data_dir: str | Path, purpose: str) -> np.ndarray:
    """Every uint8 image (N, 28, 28) of one split; ``purpose`` names the check that needs them."""
    try:
        return read_split(dataset, split, data_dir).images
    except DataFileError as exc:
        raise ExportError(f"{purpose} needs the {dataset} files: {exc}") from None


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], the graphs' input."""
    return (images.astype(np.float32) / 255.0)[:, None]


def sample_test_images(
    dataset: str, data_dir: str | Path, n: int = 128, seed: int = 0
) -> np.ndarray:
    """``n`` real test images (float32 in [0, 1], (n, 1, 28, 28)), a seeded selection."""
    images = split_images(dataset, "test", data_dir, "validation")
    return as_float(images[np.random.default_rng(seed).choice(len(images), n, replace=False)])


def prior_latents(latent_dim: int, n: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
