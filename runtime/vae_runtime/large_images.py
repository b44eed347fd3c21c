"""Large image files through the declared preprocessing in strips of rows.

Read whole, a 12000 x 12000 RGBA PNG would exist as float32 channels, float64 alpha
compositing and a float64 copy for the reduction: about 55 bytes per pixel, 8 GB. The
first geometric step is an area reduction to reduce.max_side, and area reduction along
the rows needs only the input rows each output row covers, so a large file is read as
crops of the decoded image, composited and reduced strip by strip: memory stays near the
decoded file itself. The arithmetic is the one :func:`vae_runtime.resample.area` does, in
the same order, so the result is bit for bit that of :func:`~vae_runtime.preprocess.prepare`
on the whole image (the one exception: the "ink" alpha rule's two sums are added strip by
strip, which could only matter for an image whose mean ink sits exactly on 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import InputError
from .preprocess import (
    Prepared,
    forced_paper,
    grey_alpha,
    ink_paper,
    onto_paper,
    pixels,
    prepare,
    prepare_reduced,
    readable,
)
from .resample import resize

if TYPE_CHECKING:
    from PIL import Image as PILImage

LARGE_PIXELS = 1 << 24  # files above this many pixels (16 M) are read in strips
STRIP_PIXELS = 1 << 22  # input pixels per strip: about 100 MB of working memory

Rows = Callable[[int, int], np.ndarray]  # (first row, end row) -> float32 (rows, W) grey


def prepare_file(
    image: PILImage.Image,
    spec: dict[str, Any],
    invert: bool | Literal["auto"] = "auto",
    large_pixels: int | None = None,
) -> Prepared:
    """A decoded image file through ``spec``; files over ``large_pixels`` (default
    LARGE_PIXELS) in strips."""
    if invert not in ("auto", True, False):
        raise InputError(f'invert must be "auto", True or False, got {invert!r}')
    max_side = spec["reduce"]["max_side"]
    image = readable(image, max_side)
    w, h = image.size
    k = max_side / max(h, w)
    m = max(1, int(np.floor(h * k + 0.5)))  # the reduced height, as the whole-image path
    limit = LARGE_PIXELS if large_pixels is None else large_pixels
    if w * h <= limit or k >= 1 or m >= h:
        return prepare(*grey_alpha(pixels(image)), spec, invert)
    strip = max(1, STRIP_PIXELS // w)
    rows = _composited_rows(image, spec["alpha"], invert, strip)
    x = area_rows(rows, h, m, w, strip)
    return prepare_reduced(resize(x, (m, max(1, int(np.floor(w * k + 0.5))))), spec, invert)


def _composited_rows(image: PILImage.Image, rule: str, invert: bool | str, strip: int) -> Rows:
    """Rows of ``image`` as grey with alpha composited as the whole-image path does. The
    "ink" rule's paper colour needs the whole image's sums first: one pass of ``strip``
    rows at a time over the decoded image before the rows are handed out."""
    w, h = image.size

    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray | None]:
        return grey_alpha(pixels(image.crop((0, r0, w, r1))))

    paper = forced_paper(rule, invert)
    if paper is None and image.mode in ("LA", "RGBA"):
        covered = ink = 0.0
        for r0 in range(0, h, strip):
            grey, alpha = read(r0, min(h, r0 + strip))
            a = np.ones(grey.shape) if alpha is None else alpha.astype(np.float64)
            covered += a.sum()
            ink += (a * grey.astype(np.float64)).sum()
        paper = ink_paper(covered, ink)

    def rows(r0: int, r1: int) -> np.ndarray:
        grey, alpha = read(r0, r1)
        return grey if alpha is None or paper is None else onto_paper(grey, alpha, paper)

    return rows


def area_rows(rows: Rows, n: int, m: int, width: int, strip_rows: int) -> np.ndarray:
    """:func:`vae_runtime.resample.area` along axis 0 (n -> m rows), reading the input
    through ``rows`` about ``strip_rows`` rows at a time. float64 (m, width)."""
    scale = n / m
    lo = np.arange(m, dtype=np.float64) * n / m
    hi = np.arange(1, m + 1, dtype=np.float64) * n / m
    first = np.floor(lo).astype(np.intp)
    taps = int(np.ceil(scale)) + 1
    chunk = max(1, int(strip_rows / scale))
    out = np.empty((m, width), np.float64)
    for i0 in range(0, m, chunk):
        i1 = min(m, i0 + chunk)
        r0, r1 = int(first[i0]), min(n, int(first[i1 - 1]) + taps)
        a = rows(r0, r1).astype(np.float64)
        acc = np.zeros((i1 - i0, width), np.float64)
        for t in range(taps):
            j = first[i0:i1] + t
            weight = np.clip(np.minimum(j + 1, hi[i0:i1]) - np.maximum(j, lo[i0:i1]), 0.0, None)
            weight = weight / scale
            weight[j >= n] = 0.0
            acc += weight[:, None] * a[np.minimum(j, n - 1) - r0]
        out[i0:i1] = acc
    return out
