"""What the runtime writes: PNG grids of images and .npy files, each atomically (a failed
run leaves no partial file and keeps an old one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vae_format import grid
from vae_format.atomic import save_npy

from .arguments import check_fits, checked_int
from .errors import InputError
from .sources import Images, as_images

__all__ = [
    "check_grid_name",
    "make_grid",
    "reconstruction_rows",
    "save_grid",
    "save_npy",
    "save_reconstruction_grid",
]


def make_grid(images: Images, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """A uint8 (H, W) grid of the images (any form :func:`as_images` accepts), laid out and
    rounded as :mod:`vae_format.grid` says."""
    x = as_images(images)
    nrow = checked_int(nrow, "nrow")
    pad = checked_int(pad, "pad", minimum=0)
    if len(x) == 0:
        raise InputError("no images to put in a grid")
    cols = min(nrow, len(x))
    rows = -(-len(x) // cols)
    check_fits((rows * (28 + pad) + pad) * (cols * (28 + pad) + pad), 1, "the grid")
    return grid.make_grid(x, nrow, pad)


def save_grid(images: Images, path: str | os.PathLike[str], nrow: int = 8, pad: int = 2) -> Path:
    """Write the images as one grayscale PNG grid, atomically; returns the path."""
    path = check_grid_name(path)
    return grid.save_png(make_grid(images, nrow, pad), path)


def check_grid_name(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if it names a PNG file (not a directory)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: grids are written as PNG; give a .png file name")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def reconstruction_rows(
    originals: np.ndarray, reconstructions: np.ndarray, nrow: int
) -> tuple[np.ndarray, int]:
    """Rows of originals, each above the row of their reconstructions, and the grid's
    column count: ``min(nrow, N)``. A short last row is padded with blank (black) images,
    so every reconstruction sits right under its original."""
    x = as_images(originals)
    r = as_images(reconstructions)
    cols = min(checked_int(nrow, "nrow"), max(1, len(x)))
    rows = []
    for start in range(0, len(x), cols):
        for part in (x[start : start + cols], r[start : start + cols]):
            blank = np.zeros((cols - len(part), *part.shape[1:]), np.float32)
            rows += [part, blank]
    return np.concatenate(rows), cols


def save_reconstruction_grid(
    originals: Images, reconstructions: Images, path: str | os.PathLike[str], nrow: int = 8
) -> Path:
    """A PNG grid: rows of at most ``nrow`` originals, each above their reconstructions."""
    images, cols = reconstruction_rows(as_images(originals), as_images(reconstructions), nrow)
    return save_grid(images, path, nrow=cols)
