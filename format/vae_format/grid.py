"""Image grids, laid out like torchvision.utils.make_grid: ``nrow`` images per row and ``pad``
pixels of black between and around them.

Pixels: a value v in [0, 1] becomes uint8 ``floor(v * 255 + 0.5)`` (round half up), the rule
of torchvision's ``save_image``, so a grid matches one drawn from the PyTorch side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8, rounded half up (values outside are clipped)."""
    return np.clip(np.asarray(images, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """A uint8 (H, W) grid of float images in [0, 1], shaped (N, 1, h, w) or (N, h, w)."""
    x = np.asarray(images)
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"need a non-empty (N, h, w) or (N, 1, h, w) array, got {x.shape}")
    if nrow < 1 or pad < 0:
        raise ValueError(f"need nrow >= 1 and pad >= 0, got nrow={nrow}, pad={pad}")
    n, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), np.uint8)
    for i, image in enumerate(to_pixels(x)):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_png(pixels: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 (H, W) array as a grayscale PNG, atomically (Pillow needed)."""
    from PIL import Image  # lazy: only writing a picture needs Pillow

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(pixels, np.uint8)).save(tmp, format="PNG")
    return path
