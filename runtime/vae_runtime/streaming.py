"""Embedding a source of any length into a .npy file in bounded memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .jobs import drain, embed_results, embed_schema
from .records import ImageSource
from .writers.arrays import NpyWriter

if TYPE_CHECKING:
    from .vae import VAE


def embed_to_npy(
    vae: VAE,
    source: ImageSource,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Embed every image of ``source`` into the .npy file ``path``; returns the rows written.

    Rows are appended to a temporary file beside the target as they come (its header
    rewritten at the end) and renamed into place when complete, so memory stays at one
    batch, a full disk is an ``OSError``, and a failed run leaves no partial file. When the
    rows come from separate files, ``<name>.sources.jsonl`` beside it names each row's file.
    ``progress`` is called with the number of rows of each batch done.
    """
    writer = NpyWriter(path, embed_schema(source, vae.latent_dim), with_sidecar=source.per_file)
    drain(embed_results(vae, source, batch_size), [writer], progress)
    return writer.rows
