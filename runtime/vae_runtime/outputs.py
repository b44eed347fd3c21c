"""What the runtime writes: PNG grids of images and .npy files, each atomically (a failed
run leaves no partial file and keeps an old one), and embeddings streamed into a .npy."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vae_format import grid
from vae_format.atomic import atomic_path, save_npy

from .arguments import checked_int
from .errors import InputError
from .sources import Images, ImageSource, as_images

if TYPE_CHECKING:
    from .vae import VAE

__all__ = ["embed_to_npy", "make_grid", "reconstruction_rows", "save_grid", "save_npy"]

COPY_ROWS = 65536  # rows copied per step when a streamed .npy is cut to its written rows


def make_grid(images: Images, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """A uint8 (H, W) grid of the images (any form :func:`as_images` accepts), laid out and
    rounded as :mod:`vae_format.grid` says."""
    x = as_images(images)
    nrow = checked_int(nrow, "nrow")
    pad = checked_int(pad, "pad", minimum=0)
    if len(x) == 0:
        raise InputError("no images to put in a grid")
    return grid.make_grid(x, nrow, pad)


def save_grid(images: Images, path: str | os.PathLike[str], nrow: int = 8, pad: int = 2) -> Path:
    """Write the images as one grayscale PNG grid, atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: grids are written as PNG; give a .png file name")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return grid.save_png(make_grid(images, nrow, pad), path)


def reconstruction_rows(
    originals: np.ndarray, reconstructions: np.ndarray, nrow: int
) -> np.ndarray:
    """Each row of ``nrow`` originals followed by the row of their reconstructions, ready
    for :func:`save_grid` with the same ``nrow``."""
    rows = []
    for start in range(0, len(originals), nrow):
        rows += [originals[start : start + nrow], reconstructions[start : start + nrow]]
    return np.concatenate(rows)


def embed_to_npy(
    vae: VAE,
    source: ImageSource,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Embed every image of ``source`` into the .npy file ``path``; returns the rows written.

    The embeddings go straight into a memory-mapped .npy beside the target, renamed when
    done, so memory stays at one batch and a failed run leaves no partial file.
    ``progress`` is called with the number of images of each batch done.
    """
    shape = (source.count, vae.latent_dim)
    written = 0
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for mu in vae.embed_iter(source.batches(batch_size)):
            out[written : written + len(mu)] = mu
            written += len(mu)
            if progress is not None:
                progress(len(mu))
        out.flush()
        del out
        if written != source.count:  # files were skipped: keep only the rows written
            _truncate_npy(tmp, written)
    return written


def _truncate_npy(path: Path, rows: int) -> None:
    full = np.load(path, mmap_mode="r")
    part = path.with_name(path.name + ".part")
    try:
        out = np.lib.format.open_memmap(
            part, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:])
        )
        for start in range(0, rows, COPY_ROWS):
            stop = min(start + COPY_ROWS, rows)
            out[start:stop] = full[start:stop]
        out.flush()
        del out, full
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
