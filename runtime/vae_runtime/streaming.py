"""Embedding a source of any length into a .npy file in bounded memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vae_format.atomic import atomic_path

from .sources import ImageSource

if TYPE_CHECKING:
    from .vae import VAE

COPY_ROWS = 65536  # rows copied per step when a streamed .npy is cut to its written rows


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
