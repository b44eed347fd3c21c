"""Separable resampling with exactly specified kernels (docs/preprocessing.md), in numpy.

Written out rather than borrowed from Pillow so that a JavaScript implementation can
reproduce the numbers: both filters below are a few lines of arithmetic.

- ``area``: output pixel i of an axis n -> m covers the input interval [i*s, (i+1)*s),
  s = n/m, and is the mean of the input over it (pixels as constant unit squares): input
  pixel j weighs (its overlap with the interval) / s. float64.
- ``linear``: output pixel i samples the input at x = (i + 0.5) * s - 0.5, clamped to
  [0, n - 1], interpolating linearly between pixels floor(x) and floor(x) + 1.
"""

from __future__ import annotations

import numpy as np


def resize(image: np.ndarray, shape: tuple[int, int], down: str = "area", up: str = "linear"):
    """``image`` (H, W) resized to ``shape``, each axis with ``down`` when it shrinks and
    ``up`` when it grows; an axis that keeps its length is left alone. float64 out."""
    out = np.asarray(image, dtype=np.float64)
    for axis, m in enumerate(shape):
        n = out.shape[axis]
        if m != n:
            kind = down if m < n else up
            out = (area if kind == "area" else linear)(out, m, axis)
    return out


def area(a: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Mean of ``a`` (2-D) over each of ``m`` equal intervals along ``axis`` (module doc)."""
    if axis == 1:  # whole contiguous rows are gathered below: work on the transpose
        return area(np.ascontiguousarray(a.T), m, 0).T
    n = a.shape[0]
    scale = n / m
    lo = np.arange(m, dtype=np.float64) * n / m  # interval i is [lo[i], hi[i])
    hi = np.arange(1, m + 1, dtype=np.float64) * n / m
    first = np.floor(lo).astype(np.intp)
    out = np.zeros((m, *a.shape[1:]), np.float64)
    # Interval i overlaps input pixels first[i] .. first[i] + ceil(scale): add them in turn,
    # each weighted by its overlap with the interval (zero past the interval or the input).
    for t in range(int(np.ceil(scale)) + 1):
        j = first + t
        weight = np.clip(np.minimum(j + 1, hi) - np.maximum(j, lo), 0.0, None) / scale
        weight[j >= n] = 0.0
        out += weight[:, None] * a[np.minimum(j, n - 1)]
    return out


def linear(a: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Linear interpolation at the centres of ``m`` output pixels (see module doc)."""
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    x = np.clip((np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5, 0.0, n - 1)
    j = np.minimum(np.floor(x).astype(np.intp), n - 2) if n > 1 else np.zeros(m, np.intp)
    t = (x - j).reshape(-1, *([1] * (a.ndim - 1)))
    upper = a[np.minimum(j + 1, n - 1)]
    out = a[j] * (1.0 - t) + upper * t
    return np.moveaxis(out, 0, axis)
