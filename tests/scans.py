"""Synthetic "scans" of MNIST digits, for measuring preprocessing (tests and scripts).

A scan is a test digit as a user would have it: upscaled (bicubic), placed off-centre on
a larger canvas of uneven paper (a linear grey gradient plus Gaussian noise), in one of the
KINDS below, encoded as PNG or JPEG bytes. Deterministic given the seed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Kind:
    name: str
    dark_ink: bool  # dark ink on light paper (else light on dark)
    mode: str  # "L", "RGB" or "RGBA" (RGBA: transparent paper, alpha = ink coverage)
    fmt: str  # "PNG" or "JPEG"


KINDS = (
    Kind("dark-on-light PNG (L)", True, "L", "PNG"),
    Kind("dark-on-light JPEG (RGB)", True, "RGB", "JPEG"),
    Kind("light-on-dark PNG (L)", False, "L", "PNG"),
    Kind("light-on-dark JPEG (RGB)", False, "RGB", "JPEG"),
    Kind("dark ink, transparent RGBA PNG", True, "RGBA", "PNG"),
    Kind("light ink, transparent RGBA PNG", False, "RGBA", "PNG"),
)


def make_scan(digit: np.ndarray, kind: Kind, rng: np.random.Generator) -> bytes:
    """One uint8 (28, 28) MNIST digit as the encoded bytes of a scan of ``kind``."""
    scale = rng.uniform(3.0, 8.0)
    side = round(28 * scale)
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    coverage = np.clip(np.asarray(big, np.float64) / 255.0, 0.0, 1.0)
    h, w = (round(side * rng.uniform(1.15, 2.5)) for _ in range(2))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    cover = np.zeros((h, w))
    cover[top : top + side, left : left + side] = coverage

    paper = _paper(h, w, kind.dark_ink, rng)
    ink = rng.uniform(0.03, 0.3) if kind.dark_ink else rng.uniform(0.75, 0.97)
    if kind.mode == "RGBA":
        colour = _tint(np.full((h, w), ink), rng)
        pixels = np.dstack([colour, cover[..., None]])
    else:
        grey = paper * (1.0 - cover) + ink * cover + rng.normal(0.0, 0.03, (h, w))
        pixels = _tint(grey, rng) if kind.mode == "RGB" else grey
    data = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if kind.fmt == "JPEG":
        Image.fromarray(data).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    else:
        Image.fromarray(data).save(buf, "PNG")
    return buf.getvalue()


def _paper(h: int, w: int, light: bool, rng: np.random.Generator) -> np.ndarray:
    """A linear gradient in a random direction: light paper 0.55..1, dark paper 0..0.35."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * yy / h + np.sin(angle) * xx / w + 1.0) / 2.0  # 0..1
    span = rng.uniform(0.1, 0.3)
    base = rng.uniform(0.7, 0.95) if light else rng.uniform(0.03, 0.2)
    return base + (ramp - 0.5) * span


def _tint(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey as RGB with a slight random colour cast (ink and paper are never pure grey)."""
    cast = rng.uniform(-0.06, 0.06, 3)
    return np.clip(grey[..., None] + cast, 0.0, 1.0)


def scans(digits: np.ndarray, kind: Kind, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    return [make_scan(d, kind, rng) for d in digits]
