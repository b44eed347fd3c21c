"""Preprocessing parity vectors for web/ (``vae-export web-golden`` writes them too).

``web/test/golden/preprocess/vectors.json``: raw images of every kind the JavaScript port
of the preprocessing must handle (drawings like the page's pad, white on black and black on
white, transparent RGBA, grey and tinted RGB scans of test digits on graded noisy paper,
a page larger than ``reduce.max_side``, blank paper, model-sized dataset images, Fashion
items), each with the spec it runs under, the forced or automatic polarity, and what the
Python runtime makes of it (``vae_runtime.preprocess.prepare``): the float32 28x28 input
and its decisions (``Prepared.info``). The pixels are stored as decoded (uint8, H x W x C,
zlib + base64), so the comparison is of the preprocessing, not of PNG/JPEG decoders.
Deterministic (fixed seeds, sorted keys): a test can regenerate and compare.
"""

from __future__ import annotations

import base64
import importlib.util
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vae_format.datasets import read_split

FORMAT = "vae-onnx-web-preprocess-vectors"
VERSION = 1
SEED = 12
PAD = 280  # the page's drawing pad, in canvas pixels
STROKE = 20  # the pad's pen width


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pixels(array: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(array, dtype=np.uint8)
    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    return {"height": h, "width": w, "channels": channels,
            "uint8_zlib": _b64(zlib.compress(a.tobytes(), 9))}  # fmt: skip


# ---- inputs ---------------------------------------------------------------------------------


def _drawing(strokes: list[list[tuple[float, float]]], ink: int, paper: int) -> np.ndarray:
    """An opaque RGBA pad drawing: round strokes of grey ``ink`` on ``paper``."""
    image = Image.new("L", (PAD, PAD), paper)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        draw.line(stroke, fill=ink, width=STROKE, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            r = STROKE / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    grey = np.asarray(image)
    return np.dstack([grey, grey, grey, np.full_like(grey, 255)])


SEVEN = [[(40, 40), (120, 40), (70, 150)]]  # small, in the top-left corner
ZERO = [[(140 + 70 * np.sin(t), 150 - 95 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 41)]]
ONE = [[(210, 120), (200, 260)]]


def _scan(digit: np.ndarray, rng: np.random.Generator, h: int, w: int, dark_ink: bool,
          noise: float = 0.03) -> np.ndarray:  # fmt: skip
    """A test digit upscaled (bicubic) onto graded paper with noise, grey float in [0, 1]."""
    side = int(min(h, w) * rng.uniform(0.45, 0.8))
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    cover = np.zeros((h, w))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    cover[top : top + side, left : left + side] = np.asarray(big, np.float64) / 255.0
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * yy / h + np.sin(angle) * xx / w) * rng.uniform(0.1, 0.3)
    paper = (rng.uniform(0.7, 0.9) if dark_ink else rng.uniform(0.05, 0.2)) + ramp / 2
    ink = rng.uniform(0.05, 0.3) if dark_ink else rng.uniform(0.75, 0.95)
    return paper * (1 - cover) + ink * cover + rng.normal(0.0, noise, (h, w))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _tint(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _u8(np.clip(grey[..., None] + rng.uniform(-0.06, 0.06, 3), 0.0, 1.0))


def _transparent(digit: np.ndarray, size: tuple[int, int], colour: float) -> np.ndarray:
    """RGBA: one ink colour everywhere, alpha = the upscaled digit's coverage."""
    h, w = size
    alpha = np.zeros((h, w), np.uint8)
    side = min(h, w) * 2 // 3
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    alpha[h - side - 5 : h - 5, 10 : 10 + side] = big
    return np.dstack([np.full((h, w, 3), round(255 * colour), np.uint8), alpha])


def inputs(data_dir: Path) -> Iterator[tuple[str, str, Any, np.ndarray]]:
    """(name, spec name, invert, uint8 pixels) for every vector."""
    rng = np.random.default_rng(SEED)
    digit = read_split("mnist", "test", data_dir).images[:8]
    item = read_split("fashion-mnist", "test", data_dir).images[:4]
    mnist, fashion = "mnist", "fashion-mnist"
    yield "pad: small 7 in a corner, white on black", mnist, "auto", _drawing(SEVEN, 255, 0)
    yield "pad: 0, black on white", mnist, "auto", _drawing(ZERO, 0, 255)
    yield "pad: 1 near the edge, forced invert=false", mnist, False, _drawing(ONE, 255, 0)
    yield "pad: 0 black on white, forced invert=true", mnist, True, _drawing(ZERO, 0, 255)
    yield "transparent RGBA, dark ink", mnist, "auto", _transparent(digit[0], (150, 200), 0.1)
    yield "transparent RGBA, light ink", mnist, "auto", _transparent(digit[1], (120, 90), 0.9)
    # Noisy scans, kept small: noise does not compress.
    yield "grey scan, dark on light", mnist, "auto", _u8(_scan(digit[2], rng, 110, 140, True))
    yield "grey scan, light on dark", mnist, "auto", _u8(_scan(digit[3], rng, 77, 100, False))
    scan = _tint(_scan(digit[4], rng, 80, 70, True), rng)
    yield "RGB scan with a colour cast, dark on light", mnist, "auto", scan
    scan = _tint(_scan(digit[5], rng, 64, 90, False), rng)
    yield "RGB scan with a colour cast, light on dark", mnist, "auto", scan
    page = _u8(_scan(digit[6], rng, 420, 600, True, noise=0.0))
    yield "a 600x420 page (reduced to 256 first)", mnist, "auto", page
    yield "blank paper (no ink)", mnist, "auto", _u8(0.8 + rng.normal(0.0, 0.03, (48, 60)))
    yield "28x28 test digit (passthrough)", mnist, "auto", digit[7]
    yield "28x28 test digit, inverted (passthrough)", mnist, "auto", 255 - digit[7]
    yield "Fashion item scan", fashion, "auto", _u8(_scan(item[0], rng, 100, 80, True))
    yield "Fashion item scan, wide", fashion, "auto", _u8(_scan(item[1], rng, 72, 110, True))
    photo = _tint(_scan(item[2], rng, 90, 110, True, noise=0.01), rng)
    yield "Fashion item RGB photo on white", fashion, "auto", photo
    yield "28x28 Fashion item (passthrough)", fashion, "auto", item[3]
    # Unquantized (quantize: null): the floats before the last rounding, compared directly.
    scan = _u8(_scan(digit[2], rng, 70, 90, True))
    yield "grey scan, not quantized", "mnist, unquantized", "auto", scan
    photo = _tint(_scan(item[0], rng, 80, 70, True, noise=0.01), rng)
    yield "Fashion RGB photo, not quantized", "fashion-mnist, unquantized", "auto", photo


# ---- the record -----------------------------------------------------------------------------


def available() -> bool:
    """Whether this runtime has the preprocessing (issue 12) the vectors come from."""
    return importlib.util.find_spec("vae_runtime.preprocess") is not None


def vectors(data_dir: Path) -> dict[str, Any]:
    """The parity record (see the module docstring)."""
    from vae_format.preprocess_spec import builtin
    from vae_runtime.preprocess import grey_alpha, prepare  # the preprocessing of issue 12

    specs = {name: builtin(name) for name in ("mnist", "fashion-mnist")}
    for name in ("mnist", "fashion-mnist"):
        specs[f"{name}, unquantized"] = {**builtin(name), "quantize": None}
    cases = []
    for name, spec_name, invert, pixels in inputs(data_dir):
        result = prepare(*grey_alpha(pixels), specs[spec_name], invert=invert)
        cases.append({
            "name": name,
            "spec": spec_name,
            "invert": invert,
            "input": _pixels(pixels),
            "info": result.info,
            "border": float(result.border),
            "output": _b64(np.ascontiguousarray(result.image, "<f4").tobytes()),
        })  # fmt: skip
    return {"format": FORMAT, "version": VERSION, "generator": "vae-export web-golden",
            "specs": specs, "cases": cases}  # fmt: skip


def vectors_path(web_dir: Path) -> Path:
    return web_dir / "test" / "golden" / "preprocess" / "vectors.json"
