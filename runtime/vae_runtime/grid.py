"""Image grids as PNG files, laid out like torchvision.utils.make_grid (nrow images per row,
``pad`` pixels of black between and around them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .inputs import Images, as_images, count


def make_grid(images: Images, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """A uint8 (H, W) grid of the images (any form :func:`as_images` accepts)."""
    x = as_images(images)[:, 0]
    nrow = count(nrow, "nrow")
    pad = count(pad, "pad", minimum=0)
    if len(x) == 0:
        raise InputError("no images to put in a grid")
    n, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), np.uint8)
    # Round half up, as torchvision's save_image does (x * 255 + 0.5, truncated).
    pixels = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_grid(images: Images, path: str | os.PathLike[str], nrow: int = 8, pad: int = 2) -> Path:
    """Write the images as one grayscale PNG grid, atomically; returns the path."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: grids are written as PNG; give a .png file name")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    grid = make_grid(images, nrow, pad)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path
