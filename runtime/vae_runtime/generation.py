"""Shard-stable prior draws: image i of seed s is the same however the work is split.

The rule. Indices are cut into blocks of ``BLOCK`` = 1024. Block b of seed s draws its
latents from its own generator, ``numpy.random.default_rng(SeedSequence(s, spawn_key=(b,)))``
(the b-th child that ``SeedSequence(s).spawn`` would make; PCG64), as float32 standard
normals in C order: image ``i`` gets row ``i - b * BLOCK`` of that block's draw, with
``b = i // BLOCK``. Its latent depends on (s, i) and the latent size only, so images
``i..j`` come out the same from one call or from any number of calls (processes, machines)
with ``start=i`` and ``n=j-i`` in pieces. A block costs one generator and at most 1024
draws of L numbers, so a shard starting mid-block wastes at most one block.

Decoding is per image: on the CPU engine the decoder's result for an image does not depend
on the other images of its batch (tested), so the images are identical too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .arguments import checked_int

BLOCK = 1024


def block_generator(seed: int, block: int) -> np.random.Generator:
    """The generator of block ``block`` of seed ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))


def spans(start: int, stop: int, size: int = BLOCK) -> Iterator[tuple[int, int]]:
    """[start, stop) cut at every multiple of ``size``."""
    lo = start
    while lo < stop:
        hi = min(stop, (lo // size + 1) * size)
        yield lo, hi
        lo = hi


def prior_latents(seed: int, start: int, n: int, latent_dim: int) -> np.ndarray:
    """The latents of images ``start .. start + n - 1`` of ``seed``: float32 (n, L)."""
    seed = checked_int(seed, "seed", minimum=0)
    start = checked_int(start, "start", minimum=0)
    n = checked_int(n, "n", minimum=0)
    out = np.empty((n, latent_dim), np.float32)
    for lo, hi in spans(start, start + n):
        block = lo // BLOCK
        first = block * BLOCK  # draw the block's rows up to hi; keep those from lo
        z = block_generator(seed, block).standard_normal((hi - first, latent_dim), np.float32)
        out[lo - start : hi - start] = z[lo - first :]
    return out
