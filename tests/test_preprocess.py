"""The preprocessing steps one by one, and the spec's validator (docs/preprocessing.md)."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from PIL import Image

from vae_format.preprocess_spec import BUILTIN, SpecError, builtin, validate
from vae_runtime.errors import InputError
from vae_runtime.preprocess import (
    composite,
    decode,
    find_ink,
    grey_alpha,
    otsu,
    place,
    prepare,
    quantile,
    ring,
)
from vae_runtime.resample import area, linear, resize

RNG = np.random.default_rng(7)
MNIST = builtin("mnist")


# ---- resampling -----------------------------------------------------------------------------


def area_reference(a: np.ndarray, m: int) -> np.ndarray:
    """Area resampling along axis 0 from its definition: the overlap of each input pixel
    [j, j+1) with the output pixel's interval [i*s, (i+1)*s), divided by s."""
    n = a.shape[0]
    s = n / m
    out = np.zeros((m, *a.shape[1:]))
    for i in range(m):
        for j in range(n):
            overlap = min(j + 1, (i + 1) * s) - max(j, i * s)
            if overlap > 0:
                out[i] += overlap / s * a[j]
    return out


@pytest.mark.parametrize("n, m", [(10, 3), (7, 7 * 3), (28, 20), (300, 256), (5, 1), (1, 4)])
def test_area_matches_its_definition(n, m):
    a = RNG.random((n, 6))
    np.testing.assert_allclose(area(a, m, 0), area_reference(a, m), atol=1e-12)
    np.testing.assert_allclose(area(a.T, m, 1), area_reference(a, m).T, atol=1e-12)


def test_area_keeps_the_mean_and_constants():
    a = RNG.random((97, 61))
    out = resize(a, (20, 13), down="area")
    np.testing.assert_allclose(out.mean(), a.mean(), rtol=1e-12)
    np.testing.assert_allclose(resize(np.full((97, 61), 0.3), (20, 13)), 0.3, atol=1e-12)
    # Integer factors are plain block means.
    np.testing.assert_allclose(area(a[:96], 32, 0), a[:96].reshape(32, 3, 61).mean(1))


def test_linear_samples_at_pixel_centres():
    a = np.array([0.0, 1.0, 3.0])
    # Centres of 6 outputs over 3 inputs: x = (i + 0.5) / 2 - 0.5, clamped to [0, 2].
    np.testing.assert_allclose(linear(a, 6, 0), [0.0, 0.25, 0.75, 1.5, 2.5, 3.0])
    assert resize(a[None], (1, 3)).tolist() == [a.tolist()]  # same size: untouched


# ---- decisions -----------------------------------------------------------------------------


def page(h: int, w: int, paper: float, ink: float, noise: float = 0.0) -> np.ndarray:
    """A page with a bold plus sign in the middle third."""
    x = np.full((h, w), paper)
    x[h // 3 : 2 * h // 3, w // 2 - w // 20 : w // 2 + w // 20] = ink
    x[h // 2 - h // 20 : h // 2 + h // 20, w // 3 : 2 * w // 3] = ink
    return np.clip(x + RNG.normal(0.0, noise, x.shape), 0.0, 1.0)


@pytest.mark.parametrize("paper, ink, inverted", [(0.9, 0.1, True), (0.1, 0.9, False)])
def test_polarity_is_decided_and_reported(paper, ink, inverted):
    p = prepare(page(120, 90, paper, ink, 0.02), None, MNIST)
    assert p.inverted is inverted and p.decided and not p.passthrough and not p.flags
    assert p.info["inverted"] is inverted and p.info["polarity"] == "auto"
    assert p.image.shape == (28, 28) and p.image.dtype == np.float32
    assert p.image.max() == 1.0 and p.image[0].max() == 0.0  # ink white, border black
    forced = prepare(page(120, 90, paper, ink, 0.02), None, MNIST, invert=not inverted)
    assert forced.inverted is (not inverted) and not forced.decided


def test_ring_and_quantile():
    x = np.arange(100.0).reshape(10, 10)
    assert sorted(ring(x, 0.1)) == sorted(set(x.ravel()) - set(x[1:9, 1:9].ravel()))
    assert ring(x, 0.2).size == 100 - 36
    assert quantile(np.array([4.0, 1.0, 3.0, 2.0]), 0.5) == 2.0  # lower median, no mean
    assert quantile(np.array([4.0, 1.0, 3.0, 2.0]), 1.0) == 4.0


def test_otsu_splits_two_modes():
    low, high = RNG.normal(0.2, 0.03, 1000), RNG.normal(0.7, 0.03, 300)
    t = otsu(np.clip(np.concatenate([low, high]), 0, 1))
    assert low.max() < t <= high.min()
    edges = np.linspace(0.2, 0.7, 200)  # anti-aliased edge pixels between the modes
    assert 0.3 < otsu(np.concatenate([low, high, edges]).clip(0, 1)) < 0.6


def inked(x: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(x.any(1))[0], np.nonzero(x.any(0))[0]
    return x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def test_uneven_paper_is_flattened():
    """A strong gradient under the ink leaves no grey in the model input."""
    h, w = 160, 200
    gradient = np.linspace(0.55, 1.0, w)[None] * np.ones((h, 1))
    x = gradient.copy()
    x[60:100, 90:110] = 0.05
    p = prepare(x, None, MNIST)
    assert p.inverted and not p.flags
    ink = p.image > 0
    assert ink.sum() < 0.5 * ink.size and (p.image[~ink] == 0).all()
    flat = prepare(np.where(x < 0.1, 0.05, 0.9), None, MNIST)
    # The same picture as on even paper, up to the whole-pixel shift (this bar's centre of
    # mass lies exactly between two pixels, where float rounding decides) and the ink's own
    # contrast: its level is fixed while the paper under it changes by 0.05 across the bar.
    np.testing.assert_allclose(inked(p.image), inked(flat.image), atol=0.06)


def test_fit_and_centre_of_mass():
    x = page(300, 150, 0.0, 1.0)
    out = prepare(x, None, MNIST).image
    rows, cols = np.nonzero(out)
    assert rows.max() - rows.min() + 1 == 20  # the longer side fills the 20-pixel box
    assert cols.max() - cols.min() + 1 <= 12
    cy = (out.sum(1) * np.arange(28)).sum() / out.sum()
    cx = (out.sum(0) * np.arange(28)).sum() / out.sum()
    assert abs(cy - 14) <= 0.501 and abs(cx - 14) <= 0.501  # whole-pixel shifts, float32


def test_place_moves_by_whole_pixels_and_stays_inside():
    patch = np.zeros((20, 10))
    patch[:, 0] = 1.0  # all mass in the first column: the shift wants to leave the canvas
    out = place(patch, (28, 28), {"method": "mass", "target": [14, 14]})
    assert out.sum() == patch.sum() and out[:, 14].sum() == 20
    box = place(np.ones((20, 7)), (28, 28), {"method": "box"})
    assert np.nonzero(box.any(0))[0].tolist() == list(range(11, 18))  # ceil((28 - 7) / 2)
    assert np.nonzero(box.any(1))[0].tolist() == list(range(4, 24))


def test_a_speck_of_dirt_does_not_widen_the_crop():
    x = page(200, 200, 0.0, 1.0)
    clean = prepare(x, None, MNIST).image
    x[5:7, 5:7] = 1.0
    np.testing.assert_array_equal(prepare(x, None, MNIST).image, clean)


# ---- alpha ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ink, paper", [(0.1, 1.0), (0.9, 0.0)])
def test_alpha_goes_onto_the_paper_the_ink_implies(ink, paper):
    alpha = np.zeros((50, 40))
    alpha[10:40, 15:25] = 1.0
    alpha[10:40, 14] = 0.5
    grey = np.full((50, 40), ink)
    out = composite(grey, alpha, "ink", "auto")
    assert out[0, 0] == paper and out[20, 20] == np.float32(ink)
    assert composite(grey, alpha, "ink", True)[0, 0] == 1.0
    assert composite(grey, alpha, "ink", False)[0, 0] == 0.0
    p = prepare(grey, alpha, MNIST)
    assert p.inverted is (paper == 1.0) and not p.flags and p.image.max() == 1.0


def test_transparent_dark_ink_png_is_not_black():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 28:36] = (20, 20, 30, 255)  # dark ink on a fully transparent sheet
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    p = prepare(*decode(Image.open(buf)), MNIST)
    assert p.inverted and not p.flags and p.image.max() == 1.0


# ---- out-of-domain flags --------------------------------------------------------------------


@pytest.mark.parametrize(
    "grey, alpha",
    [
        (np.full((100, 80), 0.8), None),  # blank paper
        (np.clip(RNG.normal(0.7, 0.05, (100, 80)), 0, 1), None),  # noise and nothing else
        (np.linspace(0.3, 0.9, 100)[:, None] * np.ones((1, 80)), None),  # a gradient
        (np.full((100, 80), 0.1), np.zeros((100, 80))),  # fully transparent
        (np.zeros((28, 28), np.float32), None),  # model-sized, black
        (np.ones((28, 28), np.float32), None),  # model-sized, white
    ],
)
def test_an_image_without_ink_is_flagged(grey, alpha):
    p = prepare(grey, alpha, MNIST)
    assert [f.code for f in p.flags] == ["no_ink"] and p.info["flags"] == ["no_ink"]
    assert "no ink" in p.flags[0].message and "\n" not in p.flags[0].message


def test_faint_but_clean_ink_is_not_flagged():
    p = prepare(page(100, 100, 0.9, 0.7, 0.01), None, MNIST)
    assert not p.flags and p.inverted


def test_find_ink_levels_are_solid_with_soft_edges():
    residual = np.zeros((40, 40))
    residual[10:30, 18:22] = 0.6
    residual[10:30, 17] = 0.3  # a half-covered edge pixel
    levels, flag = find_ink(residual, MNIST["ink"], 0.04)
    assert flag is None and levels[20, 20] == 1.0 and levels[0, 0] == 0.0
    assert 0.0 < levels[20, 17] < 1.0


# ---- inputs ---------------------------------------------------------------------------------


def test_grey_alpha_layouts_and_dtypes():
    rgb = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    grey, alpha = grey_alpha(rgb)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    assert alpha is None
    rgba = np.dstack([rgb, np.full((9, 7), 255, np.uint8)])
    assert grey_alpha(rgba)[1] is None  # opaque alpha is no alpha
    rgba[0, 0, 3] = 0
    assert grey_alpha(rgba)[1][0, 0] == 0.0
    g16 = np.full((5, 5), 65535, np.uint16)
    assert grey_alpha(g16)[0].max() == 1.0
    assert grey_alpha(g16[..., None])[0].shape == (5, 5)
    with pytest.raises(InputError, match="accepted: \\(H, W\\) or \\(H, W, C\\)"):
        grey_alpha(np.zeros((4, 4, 5)))
    with pytest.raises(InputError, match="must lie in \\[0, 1\\]"):
        grey_alpha(np.full((4, 4), 2.0))
    with pytest.raises(InputError, match="dtype int64"):
        grey_alpha(np.zeros((4, 4), np.int64))


def test_bad_invert_argument():
    with pytest.raises(InputError, match='invert must be "auto", True or False'):
        prepare(np.zeros((30, 30)), None, MNIST, invert="yes")


# ---- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_specs_are_valid_json(name):
    spec = json.loads(json.dumps(builtin(name)))
    assert validate(spec) == spec
    assert validate("none") is None


def test_builtin_returns_a_copy():
    builtin("mnist")["fit"]["box"] = 3
    assert builtin("mnist")["fit"]["box"] == 20


def changed(path: str, value):
    spec = copy.deepcopy(BUILTIN["mnist"])
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    "spec, words",
    [
        ("raw", 'must be "none" or an object'),
        ([1], 'must be "none" or an object'),
        (changed("resize", {"box": 20}), "unknown step(s) ['resize']"),
        (changed("fit", KeyError), "missing step(s) ['fit']"),
        (changed("version", 2), "preprocess.version: must be 1"),
        (changed("version", True), "preprocess.version: must be 1"),
        (changed("fit.box", 20.5), "preprocess.fit.box: must be an integer"),
        (changed("fit.box", True), "preprocess.fit.box: must be an integer"),
        (changed("fit.box", 29), "fit.box: 29 does not fit in size 28x28"),
        (changed("fit.down", "lanczos"), "fit.down: must be one of ['area']"),
        (changed("fit.extra", 1), "preprocess.fit: unknown parameter(s) ['extra']"),
        (changed("polarity.quantile", KeyError), "polarity: missing parameter(s) ['quantile']"),
        (changed("polarity.threshold", 1.5), "polarity.threshold: must lie in [0.0, 1.0]"),
        (changed("polarity.threshold", float("nan")), "polarity.threshold: must be a number"),
        (changed("background.method", "rolling-ball"), "background.method: must be one of"),
        (changed("background.filter", 4), "background.filter: must be odd"),
        (changed("ink.threshold", "auto"), "ink.threshold: must be a number"),
        (changed("ink.levels", {"method": "keep", "low": 1}), "unknown parameter(s) ['low']"),
        (changed("center.target", [14]), "center.target: must be a list of two numbers"),
        (changed("center.target", [14, 40]), "center.target: [14, 40] lies outside"),
        (changed("alpha", "grey"), "preprocess.alpha: must be one of ['ink', 'black', 'white']"),
        (changed("quantize", 1), "preprocess.quantize: must lie in [2, 65535]"),
        (changed("sharpen", {"sigma": 1.0}), "sharpen: missing parameter(s) ['amount', 'radius']"),
    ],
)
def test_bad_specs_are_refused_in_one_line(spec, words):
    with pytest.raises(SpecError) as info:
        validate(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_spec_drives_the_steps():
    x = page(300, 150, 0.0, 1.0)
    small = prepare(x, None, changed("fit.box", 14)).image
    rows = np.nonzero(small.any(1))[0]
    assert rows.max() - rows.min() + 1 == 14
    assert set(np.unique(prepare(x, None, changed("quantize", 4)).image)) <= {0, 0.25, 0.5, 0.75, 1}
