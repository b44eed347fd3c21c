"""Large files read in strips (vae_runtime.large_images) give exactly the whole-image result."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vae_format.preprocess_spec import builtin
from vae_runtime import VAE, large_images
from vae_runtime.large_images import area_rows, prepare_file
from vae_runtime.preprocess import decode, prepare
from vae_runtime.resample import area

ROOT = Path(__file__).resolve().parents[1]


def page(size: tuple[int, int], mode: str, dark_ink: bool, seed: int) -> Image.Image:
    """A digit-like stroke on uneven, noisy paper, in ``mode`` (alpha: ink opaque, paper
    partly transparent)."""
    rng = np.random.default_rng(seed)
    w, h = size
    paper = np.linspace(0.7, 0.95, w)[None, :] + 0.03 * rng.standard_normal((h, w))
    im = Image.fromarray((255 * np.clip(paper, 0, 1)).astype(np.uint8))
    ImageDraw.Draw(im).line(
        [(w * 0.3, h * 0.2), (w * 0.65, h * 0.25), (w * 0.45, h * 0.85)],
        fill=10,
        width=max(3, w // 25),
    )
    if not dark_ink:
        im = Image.eval(im, lambda v: 255 - v)
    if mode in ("LA", "RGBA"):
        alpha = Image.fromarray((255 * rng.uniform(0.3, 1.0, (h, w))).astype(np.uint8))
        im = Image.merge("LA", (im, alpha))
    if mode in ("RGB", "RGBA"):
        im = im.convert(mode)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    return im


def png(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    buf.seek(0)
    return Image.open(buf)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize(("size", "dark_ink"), [((700, 520), True), ((330, 1210), False)])
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_strips_equal_the_whole_image(mode, size, dark_ink, dataset, monkeypatch) -> None:
    spec = builtin(dataset)
    image = page(size, mode, dark_ink, seed=len(mode) + size[0])
    whole = prepare(*decode(png(image), spec["reduce"]["max_side"]), spec)
    monkeypatch.setattr(large_images, "STRIP_PIXELS", 37 * size[0])  # many uneven strips
    strips = prepare_file(png(image), spec, large_pixels=0)
    assert strips.info == whole.info
    np.testing.assert_array_equal(strips.image, whole.image)


@pytest.mark.parametrize("invert", [True, False])
def test_forced_polarity_in_strips(invert, monkeypatch) -> None:
    spec = builtin("mnist")
    image = page((640, 480), "RGBA", True, seed=3)
    whole = prepare(*decode(png(image), 256), spec, invert)
    monkeypatch.setattr(large_images, "STRIP_PIXELS", 5000)
    strips = prepare_file(png(image), spec, invert, large_pixels=0)
    assert strips.info == whole.info and strips.inverted is invert
    np.testing.assert_array_equal(strips.image, whole.image)


@pytest.mark.parametrize(("n", "m", "strip"), [(1000, 256, 7), (257, 256, 1), (999, 3, 50)])
def test_area_rows_is_area_along_rows(n, m, strip) -> None:
    a = np.random.default_rng(n).random((n, 11)).astype(np.float32)
    got = area_rows(lambda r0, r1: a[r0:r1], n, m, 11, strip)
    np.testing.assert_array_equal(got, area(a.astype(np.float64), m, 0))


def test_a_large_file_goes_through_the_strips(tmp_path, monkeypatch) -> None:
    """The reader the VAE uses for files takes the strip path (and gives the same
    embedding as the whole-image path)."""
    image = page((900, 700), "RGBA", True, seed=9)
    path = tmp_path / "scan.png"
    image.save(path)
    vae = VAE(ROOT / "artifacts" / "mnist-conv-z20", threads=1)
    before = vae.embed(path)
    calls = []
    real = large_images.area_rows
    monkeypatch.setattr(large_images, "LARGE_PIXELS", 1000)
    monkeypatch.setattr(large_images, "area_rows", lambda *a: calls.append(a[1:3]) or real(*a))
    after = vae.embed(path)
    assert calls == [(700, 199)]  # 700 rows -> round(700 * 256 / 900)
    np.testing.assert_array_equal(after, before)
