"""Nearest neighbours of embeddings by cosine similarity, in numpy, in bounded memory."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .arguments import checked_int
from .arrays import check_latents
from .errors import InputError

QUERY_CHUNK_CELLS = 1 << 24  # similarity cells (query x index) computed at once: 64 MB


class Neighbours(NamedTuple):
    """``indices[q]``: rows of the index, most similar first; ``scores[q]``: their cosine
    similarity to query q, in [-1, 1]."""

    indices: np.ndarray  # int64 (Q, k)
    scores: np.ndarray  # float32 (Q, k)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1).astype(np.float32)


def _vectors(x: Any, what: str, width: int | None = None) -> np.ndarray:
    array = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if array.ndim not in (1, 2):
        raise InputError(f"{what} must have shape (N, L) or (L,), got {array.shape}")
    w = array.shape[-1] if width is None else width
    return check_latents(array, w, what)


def cosine_similarity(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (N, L) with every row of ``b`` (M, L):
    float32 (N, M). A zero vector has similarity 0 with everything."""
    a = _vectors(a, "a")
    b = _vectors(b, "b", a.shape[1])
    return _unit(a) @ _unit(b).T


def similar(query: Any, index: Any, k: int = 5) -> Neighbours:
    """The ``k`` rows of ``index`` (M, L) most similar to each query (Q, L) or (L,) by
    cosine similarity, best first. Memory stays at about 64 MB of
    similarities however large Q x M is."""
    index = _unit(_vectors(index, "index_embeddings"))
    query = _unit(_vectors(query, "query", index.shape[1]))
    k = checked_int(k, "k")
    if k > len(index):
        raise InputError(f"k={k} is more than the {len(index)} index embeddings")
    rows = max(1, QUERY_CHUNK_CELLS // max(1, len(index)))
    indices = np.empty((len(query), k), np.int64)
    scores = np.empty((len(query), k), np.float32)
    for start in range(0, len(query), rows):
        sims = query[start : start + rows] @ index.T
        # argpartition finds the k best in O(M); a stable sort of them orders ties by row.
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(index) else None
        if top is None:
            top = np.broadcast_to(np.arange(len(index)), sims.shape)
        top = np.sort(top, axis=1)
        picked = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        indices[start : start + rows] = np.take_along_axis(top, order, axis=1)
        scores[start : start + rows] = np.take_along_axis(picked, order, axis=1)
    return Neighbours(indices, scores)
