"""The runtime's bulk jobs as streams of :class:`~vae_runtime.records.ResultBatch` es:
embed, score and reconstruct a source, generate a range of the prior. Each holds one batch
in memory; the writers (:mod:`vae_runtime.writers`) and ``vae-run`` consume the streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .records import Column, ImageSource, ResultBatch, Schema, SourceBatch
from .writers import Writer, writing

if TYPE_CHECKING:
    from .vae import VAE

F32 = np.dtype(np.float32)
IMAGE = (1, 28, 28)
GENERATED_KEYS = ("seed", "index")


def embed_schema(source: ImageSource, latent_dim: int, logvar: bool = False) -> Schema:
    values = [Column("embedding", (latent_dim,), F32)]
    if logvar:
        values.append(Column("logvar", (latent_dim,), F32))
    return Schema(source.keys, tuple(values))


def score_schema(source: ImageSource, column: str = "score") -> Schema:
    return Schema(source.keys, (Column(column, (), np.dtype(np.float64)),))


def image_schema(keys: tuple[str, ...], dtype: Any, status: bool) -> Schema:
    return Schema(keys, (Column("image", IMAGE, np.dtype(dtype)),), status)


def _encoded(vae: VAE, images: np.ndarray, outputs: int) -> list[np.ndarray]:
    if not len(images):
        return [np.zeros((0, vae.latent_dim), np.float32)] * outputs
    mu, logvar = vae.encode(images, preprocess="none", batch_size=len(images))
    return [mu, logvar][:outputs]


def embed_results(
    vae: VAE, source: ImageSource, batch_size: int, logvar: bool = False
) -> Iterator[ResultBatch]:
    """The embedding (mu, and logvar on request) of every row of ``source``."""
    for batch in source.rows(batch_size):
        parts = _encoded(vae, batch.images, 2 if logvar else 1)
        values = {"embedding": parts[0]}
        if logvar:
            values["logvar"] = parts[1]
        yield ResultBatch.of(batch, values, source.id_name)


def score_results(
    vae: VAE,
    source: ImageSource,
    batch_size: int,
    k: int = 1,
    seed: int = 0,
    far: float | None = None,
) -> Iterator[ResultBatch]:
    """Per-image scores; the noise comes from one ``default_rng(seed)`` drawn batch after
    batch, so the scores equal ``vae.score(all images, k=k, seed=seed)``. ``far``: an OOD
    score threshold; images above it are flagged "far_from_data" in ``source.reading``."""
    rng = np.random.default_rng(seed)
    for batch in source.rows(batch_size):
        scores = (
            vae.score(batch.images, k=k, rng=rng, preprocess="none")
            if len(batch.images)
            else np.zeros(0)
        )
        if far is not None and len(batch.images) and source.reading is not None:
            _flag_far(vae, batch, far, source)
        yield ResultBatch.of(batch, {"score": scores}, source.id_name)


def _flag_far(vae: VAE, batch: SourceBatch, far: float, source: ImageSource) -> None:
    """Flag the rows whose OOD score (docs/ood.md) is above ``far``: their score is still
    written, but the user is told they are unlike anything the model was trained on."""
    ood = vae.ood_score(batch.images, preprocess="none")
    rows = [i for i, e in enumerate(batch.errors) if e is None]
    for at in np.flatnonzero(ood > far):
        row = rows[at]
        name = batch.sources[row]
        where = (
            name if source.per_file or source.kind == "image" else f"{name}[{batch.indices[row]}]"
        )
        source.reading.flag(
            where,
            "far_from_data",
            f"unlike the model's training images (OOD score {ood[at]:.2f} > {far:.2f}, "
            "the threshold at 1% false positives); its score may mean little",
        )


def ood_results(vae: VAE, source: ImageSource, batch_size: int) -> Iterator[ResultBatch]:
    """The out-of-distribution score (docs/ood.md) of every row, as ``ood_score``."""
    for batch in source.rows(batch_size):
        scores = (
            vae.ood_score(batch.images, preprocess="none") if len(batch.images) else np.zeros(0)
        )
        yield ResultBatch.of(batch, {"ood_score": scores}, source.id_name)


def reconstruct_results(
    vae: VAE, source: ImageSource, batch_size: int, limit: int | None = None
) -> Iterator[ResultBatch]:
    """Reconstructions (``image``) and their originals (``original``) of the first
    ``limit`` rows."""
    done = 0
    for batch in source.rows(batch_size):
        if limit is not None and done >= limit:
            break
        if limit is not None and done + len(batch) > limit:
            batch = _head(batch, limit - done)
        recon = (
            vae.reconstruct(batch.images, preprocess="none") if len(batch.images) else batch.images
        )
        done += len(batch)
        values = {"image": recon, "original": batch.images}
        yield ResultBatch.of(batch, values, source.id_name)


def _head(batch: SourceBatch, n: int) -> SourceBatch:
    kept = int(np.sum([e is None for e in batch.errors[:n]]))
    ids = None if batch.ids is None else batch.ids[:n]
    return SourceBatch(
        batch.images[:kept], batch.sources[:n], batch.indices[:n], batch.errors[:n], ids
    )


def generate_results(
    vae: VAE, n: int, seed: int, start: int = 0, batch_size: int | None = None
) -> Iterator[ResultBatch]:
    """Images ``start .. start + n - 1`` of ``seed`` (the shard-stable rule), keyed by
    seed and index."""
    for first, images in vae.generate_iter(n, seed=seed, start=start, batch_size=batch_size):
        index = np.arange(first, first + len(images), dtype=np.int64)
        keys = {"seed": np.full(len(images), seed, np.int64), "index": index}
        yield ResultBatch(keys, {"image": images})


def drain(
    results: Iterator[ResultBatch],
    writers: Sequence[Writer],
    progress: Callable[[int], object] | None = None,
) -> int:
    """Write every batch to every writer; they land together at the end (none on an
    error). Returns the rows seen."""
    rows = 0
    with writing(writers):
        for batch in results:
            for w in writers:
                w.write(batch)
            rows += len(batch)
            if progress is not None:
                progress(len(batch))
    return rows
