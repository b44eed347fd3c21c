"""vae_runtime's input conversion: arrays, PIL images, image files of any size and mode,
folders, IDX and .npy sources; and every refusal, with fuzzing."""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from vae_format.idx import iter_idx_images, read_idx_header
from vae_runtime import VAE, InputError, open_images
from vae_runtime.arrays import as_latents
from vae_runtime.images import image_to_array, load_image
from vae_runtime.sources import as_images

L = 8
RNG = np.random.default_rng(0)
DIGITS_U8 = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def vae(model_dir_factory) -> VAE:
    return VAE(model_dir_factory(arch="conv", latent_dim=L), threads=1)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma in 0..255, computed independently of Pillow."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# ---- arrays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda u8: u8,  # (N, 28, 28) uint8
        lambda u8: u8[:, None],  # (N, 1, 28, 28)
        lambda u8: u8.reshape(len(u8), 784),  # (N, 784)
        lambda u8: u8.astype(np.float32) / 255,
        lambda u8: (u8.astype(np.float64) / 255)[:, None],
        lambda u8: (u8.astype(np.float16) / 255).reshape(len(u8), 784),
        lambda u8: np.asfortranarray(u8.astype(np.float32)[:, None] / 255),  # not C-contiguous
        lambda u8: (u8.astype(np.float32)[:, None] / 255).astype(">f4"),  # big-endian
        lambda u8: (u8.astype(np.float32) / 255).tolist(),  # nested lists
    ],
)
def test_array_forms_convert_to_the_same_batch(make):
    expected = DIGITS_U8.astype(np.float32)[:, None] / np.float32(255)
    x = as_images(make(DIGITS_U8))
    assert x.dtype == np.float32 and x.shape == (5, 1, 28, 28) and x.flags.c_contiguous
    np.testing.assert_allclose(x, expected, atol=1e-3)  # float16 rounds to ~1e-3


def test_single_image_is_a_batch_of_one():
    x = as_images(DIGITS_U8[0])
    np.testing.assert_array_equal(x, DIGITS_U8[:1, None] / np.float32(255))


def test_uint8_is_divided_by_255_exactly():
    x = as_images(np.arange(256, dtype=np.uint8).repeat(4)[: 784 * 1].reshape(1, 784))
    np.testing.assert_array_equal(
        x.ravel(), np.arange(256, dtype=np.float32).repeat(4)[:784] / np.float32(255)
    )


def test_invert_maps_v_to_one_minus_v():
    x = DIGITS_U8.astype(np.float32)[:, None] / 255
    np.testing.assert_allclose(as_images(x, invert=True), 1 - x, atol=1e-7)
    np.testing.assert_allclose(as_images(DIGITS_U8, invert=True), 1 - x, atol=1e-6)
    assert as_images(x, invert=True) is not x


def test_fast_path_returns_the_array_unchanged():
    x = RNG.random((3, 1, 28, 28), dtype=np.float32)
    assert as_images(x) is x


def test_fast_path_accepts_negative_zero_and_exact_bounds():
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 0, 0] = -0.0
    x[0, 0, 0, 1] = 1.0
    assert as_images(x) is x


def test_encode_of_every_form_matches_a_bare_session(vae):
    import onnxruntime as ort

    session = ort.InferenceSession(vae.info["files"]["encoder"], providers=["CPUExecutionProvider"])
    ref = DIGITS_U8.astype(np.float32)[:, None] / np.float32(255)
    mu_ref, logvar_ref = session.run(["mu", "logvar"], {"x": ref})
    for form in (DIGITS_U8, ref, ref.reshape(5, 784), list(ref)):
        mu, logvar = vae.encode(form)
        np.testing.assert_allclose(mu, mu_ref, atol=1e-5)
        np.testing.assert_allclose(logvar, logvar_ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 28, 28), (0, 1, 28, 28), (0, 784)])
def test_empty_batches_give_empty_results(vae, shape):
    x = np.zeros(shape, np.float32)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (0, L) and mu.dtype == np.float32
    assert vae.embed(x).shape == (0, L)
    assert vae.reconstruct(x).shape == (0, 1, 28, 28)
    assert vae.score(x).shape == (0,)
    assert vae.score(x, k=5).shape == (0,)
    assert vae.decode(np.zeros((0, L), np.float32)).shape == (0, 1, 28, 28)
    assert vae.sample(mu, logvar, seed=0).shape == (0, L)
    assert vae.sample(mu, logvar, n=3, seed=0).shape == (0, 3, L)
    assert list(vae.embed_iter([x])) == []


BAD_IMAGES = [
    (np.zeros((2, 3, 28, 28), np.float32), "3-channel"),
    (np.zeros((2, 28, 28, 3), np.uint8), "3-channel"),
    (np.zeros((28, 28, 3), np.uint8), "3-channel"),
    (np.zeros((784,), np.float32), "accepted shapes"),
    (np.zeros((2, 27, 28), np.float32), "accepted shapes"),
    (np.zeros((2, 2, 1, 28, 28), np.float32), "accepted shapes"),
    (np.zeros((2, 785), np.float32), "accepted shapes"),
    (np.float32(0.5), "accepted shapes"),
    (np.zeros((1, 28, 28), bool), "boolean"),
    (np.zeros((1, 28, 28), np.complex64), "not numeric"),
    (np.full((1, 28, 28), "a"), "not numeric"),
    (np.zeros((1, 28, 28), "datetime64[s]"), "not numeric"),
    (np.zeros((1, 28, 28), object), "not numeric"),
    (np.full((1, 28, 28), np.nan, np.float32), "NaN or infinite"),
    (np.full((1, 1, 28, 28), np.inf, np.float32), "NaN or infinite"),
    (np.full((1, 28, 28), -np.inf, np.float64), "NaN or infinite"),
    (np.full((1, 1, 28, 28), 1.5, np.float32), "[0, 1]"),
    (np.full((1, 28, 28), -0.1, np.float64), "[0, 1]"),
    (np.full((1, 28, 28), 255.0, np.float32), "divide 0..255 data by 255"),
    (np.zeros((1, 28, 28), np.uint16), "uint16"),
    (np.zeros((1, 28, 28), np.int64), "must be uint8"),
    (np.zeros((1, 28, 28), np.int8), "must be uint8"),
    ([[0.0] * 28, [0.0] * 27], "cannot make a numeric array"),
    (b"\x00" * 784, "raw bytes"),
    (None, "not numeric"),
]


@pytest.mark.parametrize(("bad", "words"), BAD_IMAGES, ids=range(len(BAD_IMAGES)))
def test_bad_images_are_refused_with_the_reason(vae, bad, words):
    with pytest.raises(InputError) as info:
        as_images(bad)
    assert words in str(info.value)
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        vae.encode(bad, preprocess="none")  # today's reading: today's refusals


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((2, L + 1), np.float32), f"latent size is {L}"),
        (np.zeros((2, L - 1), np.float64), f"latent size is {L}"),
        (np.zeros((2, 1, L), np.float32), "must have shape"),
        (np.full((1, L), np.nan, np.float32), "NaN or infinite"),
        (np.full((1, L), 1e39), "NaN or infinite"),  # overflows float32
        (np.zeros((1, L), bool), "not a real number"),
        (np.array(["a"] * L), "not a real number"),
        ([[0.0] * L, [0.0]], "cannot make"),
    ],
)
def test_bad_latents(vae, bad, words):
    with pytest.raises(InputError, match=words):
        vae.decode(bad)


def test_integer_and_single_latents_are_accepted(vae):
    z = np.arange(L)
    np.testing.assert_allclose(vae.decode(z), vae.decode(z[None].astype(np.float32)))
    assert as_latents(z.astype(np.float32)[None], L).dtype == np.float32


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda v: v.generate(0), "n must be >= 1"),
        (lambda v: v.generate(-3), "n must be >= 1"),
        (lambda v: v.generate(True), "n must be an integer"),
        (lambda v: v.generate(2.5), "n must be an integer"),
        (lambda v: v.generate("4"), "n must be an integer"),
        (lambda v: v.encode(DIGITS_U8, batch_size=0), "batch_size must be >= 1"),
        (lambda v: v.decode(np.zeros((1, L)), batch_size=-1), "batch_size must be >= 1"),
        (lambda v: v.score(DIGITS_U8, k=0), "k must be >= 1"),
        (lambda v: v.interpolate(DIGITS_U8[0], DIGITS_U8[1], steps=1), "steps must be >= 2"),
        (lambda v: v.interpolate(DIGITS_U8[:2], DIGITS_U8[1]), "exactly one image"),
        (lambda v: v.sample(np.zeros((1, L)), np.zeros((2, L))), "differ in shape"),
        (lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), n=0), "n must be >= 1"),
        (
            lambda v: v.sample(
                np.zeros((1, L)), np.zeros((1, L)), seed=1, rng=np.random.default_rng()
            ),
            "not both",
        ),
        (
            lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), eps=np.zeros((1, L)), seed=1),
            "not both",
        ),
        (
            lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), eps=np.zeros((2, L))),
            "eps has shape",
        ),
        (lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), seed=-1), "seed"),
        (lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), seed=1.5), "seed"),
        (lambda v: v.sample(np.zeros((1, L)), np.zeros((1, L)), rng=42), "Generator"),
        (lambda v: v.score(DIGITS_U8, k=2, eps=np.zeros((5, L))), "eps has shape"),
        (
            lambda v: v.embed(DIGITS_U8, invert=True, batch_size=False),
            "batch_size must be an integer",
        ),
    ],
)
def test_bad_arguments(vae, call, words):
    with pytest.raises(InputError, match=words):
        call(vae)


# ---- PIL images and files -------------------------------------------------------------------


def test_grayscale_pil_image_and_png_file(tmp_path):
    image = Image.fromarray(DIGITS_U8[0])
    expected = DIGITS_U8[0] / np.float32(255)
    np.testing.assert_array_equal(image_to_array(image), expected)
    image.save(tmp_path / "d.png")
    np.testing.assert_array_equal(load_image(tmp_path / "d.png"), expected)
    np.testing.assert_array_equal(as_images(str(tmp_path / "d.png"))[0, 0], expected)
    np.testing.assert_array_equal(as_images(image)[0, 0], expected)
    np.testing.assert_array_equal(
        as_images([image, tmp_path / "d.png"])[:, 0], [expected, expected]
    )


def test_rgb_becomes_luma():
    rgb = RNG.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    got = image_to_array(Image.fromarray(rgb)) * 255
    assert np.abs(got - luma(rgb)).max() <= 1.0


def test_rgba_is_composited_over_the_background():
    rgb = RNG.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    image = Image.fromarray(np.dstack([rgb, alpha]))
    a = alpha / 255.0
    over_black = luma(rgb) * a / 255
    np.testing.assert_allclose(image_to_array(image), over_black, atol=2 / 255)
    over_white = (luma(rgb) * a + 255 * (1 - a)) / 255
    np.testing.assert_allclose(image_to_array(image, invert=True), 1 - over_white, atol=2 / 255)


def test_fully_transparent_pixels_are_background_in_both_conventions():
    ink = np.zeros((28, 28, 4), np.uint8)  # black ink...
    ink[10:18, 10:18] = (0, 0, 0, 255)  # ...on a transparent sheet (dark-on-light convention)
    x = image_to_array(Image.fromarray(ink), invert=True)
    assert x[10:18, 10:18].min() == 1.0  # ink
    assert x[:10].max() == 0.0 and x[18:].max() == 0.0  # transparent -> background


def test_la_mode():
    gray = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    image = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    np.testing.assert_allclose(image_to_array(image), gray * (alpha / 255.0) / 255, atol=1.5 / 255)


def test_palette_image_uses_the_palette_colours(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    image = Image.new("P", (28, 28))
    image.putpalette(palette.ravel().tolist())
    image.putdata(index.ravel().tolist())
    image.save(tmp_path / "p.png")
    expected = luma(palette[index]) / 255
    np.testing.assert_allclose(load_image(tmp_path / "p.png"), expected, atol=1 / 255)


def test_palette_transparency_becomes_background(tmp_path):
    image = Image.new("P", (28, 28), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.info["transparency"] = 1  # the white index is transparent
    image.save(tmp_path / "t.png", transparency=1)
    x = load_image(tmp_path / "t.png")
    assert x.max() == 0.0


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_sixteen_bit_images_are_scaled_by_65535(tmp_path, fmt):
    data = RNG.integers(0, 65536, (28, 28), dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / f"d.{fmt}")
    np.testing.assert_allclose(load_image(tmp_path / f"d.{fmt}"), data / 65535.0, atol=1e-6)


def test_one_bit_image(tmp_path):
    bits = RNG.random((28, 28)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), bits.astype(np.float32))


def test_float_mode_image_is_refused():
    with pytest.raises(InputError, match="mode F"):
        image_to_array(Image.fromarray(np.zeros((28, 28), np.float32)))


def test_jpeg_file(tmp_path):
    Image.fromarray(DIGITS_U8[0]).save(tmp_path / "d.jpg", quality=95)
    got = load_image(tmp_path / "d.jpg")
    assert np.abs(got - DIGITS_U8[0] / 255).mean() < 0.05


def test_downscaling_preserves_a_constant_and_the_content():
    np.testing.assert_allclose(image_to_array(Image.new("L", (112, 112), 153)), 0.6, atol=1e-6)
    yy, xx = np.mgrid[:28, :28]
    small = np.round(255 * np.exp(-((yy - 12) ** 2 + (xx - 15) ** 2) / 40)).astype(np.uint8)
    big = np.kron(small, np.ones((4, 4), np.uint8))  # each pixel a 4x4 block
    got = image_to_array(Image.fromarray(big))
    assert np.abs(got - small / 255).max() < 0.05


def test_upscaling_a_small_image():
    np.testing.assert_allclose(image_to_array(Image.new("L", (7, 7), 255)), 1.0, atol=1e-6)


def test_aspect_ratio_is_kept_and_padded_with_background():
    wide = Image.new("L", (56, 28), 255)  # 2:1 -> 28x14, centred
    got = image_to_array(wide)
    assert got[7:21].min() == 1.0
    assert got[:7].max() == 0.0 and got[21:].max() == 0.0
    got_inv = image_to_array(Image.new("L", (56, 28), 0), invert=True)
    assert got_inv[7:21].min() == 1.0 and got_inv[:7].max() == 0.0


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((28, 28), np.uint8)
    a[2:10, 5:8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.rot90(a, 1).copy()).save(tmp_path / "r.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "r.png"), a / np.float32(255))


def test_missing_file():
    with pytest.raises(InputError, match="no such file"):
        as_images("/nonexistent/digit.png")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=re.escape("empty.png")):
        load_image(tmp_path / "empty.png")


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (200, 200), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match=r"cut.png: cannot decode image"):
        load_image(tmp_path / "cut.png")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(InputError, match=re.escape("notes.png: not an image file")):
        as_images(tmp_path / "notes.png")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_stream(path: Path, width: int, height: int, row) -> None:
    """Write an 8-bit grayscale PNG row by row (never holding the whole image)."""
    comp = zlib.compressobj(6)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        out = b""
        for y in range(height):
            out += comp.compress(b"\x00" + row(y))
            if len(out) > 1 << 20:
                f.write(_png_chunk(b"IDAT", out))
                out = b""
        f.write(_png_chunk(b"IDAT", out + comp.flush()))
        f.write(_png_chunk(b"IEND", b""))


def test_decompression_bomb_is_refused(tmp_path):
    """A PNG header promising 40000 x 40000 pixels, above Pillow's 2 x MAX_IMAGE_PIXELS."""
    path = tmp_path / "bomb.png"
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100))
    )
    with pytest.raises(InputError, match="decompression bomb"):
        as_images(path)


def test_decompression_bomb_limit_is_pillows(tmp_path, monkeypatch):
    Image.fromarray(DIGITS_U8[0]).save(tmp_path / "d.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 784 pixels > 2 * 100
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(tmp_path / "d.png")


HUGE_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from vae_runtime.images import load_image
    x = load_image(sys.argv[1])
    expected = np.zeros((28, 28)); expected[7:21, 7:21] = 1
    err = float(np.abs(x - expected).mean())
    # VmHWM: this process's peak RSS (ru_maxrss would include the forking parent's).
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    print(err, int(status.split()[0]) // 1024)
    """
)


def _huge_run(path: Path) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", HUGE_SCRIPT, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_10000_square_png_is_accepted_and_downscaled(tmp_path):
    """100 M pixels (over MAX_IMAGE_PIXELS, under twice it): decoded once, no copies."""
    path = tmp_path / "huge.png"
    side = 10000
    ink = b"\x00" * 2500 + b"\xff" * 5000 + b"\x00" * 2500
    _png_stream(path, side, side, lambda y: ink if 2500 <= y < 7500 else bytes(side))
    err, peak_mb = _huge_run(path)
    assert err < 0.05
    assert peak_mb < 100 + 100  # the decoded 100 MB image plus interpreter, numpy, ORT, PIL


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_10000_square_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "huge.jpg"
    image = Image.new("L", (10000, 10000), 0)
    ImageDraw.Draw(image).rectangle((2500, 2500, 7499, 7499), fill=255)
    image.save(path, quality=80)
    del image
    err, peak_mb = _huge_run(path)
    assert err < 0.05
    assert peak_mb < 100  # draft(): JPEG decodes at 1/8 scale, never at full size


# ---- folders and streams --------------------------------------------------------------------


def _folder(tmp_path: Path, n: int = 4) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        Image.fromarray(DIGITS_U8[i]).save(d / f"{i:02d}.png")
    return d


def test_folder_is_read_in_name_order(tmp_path):
    d = _folder(tmp_path)
    (d / ".hidden").write_text("ignored")
    (d / "sub").mkdir()
    src = open_images(d)
    assert src.kind == "folder" and src.count == 4
    np.testing.assert_array_equal(src.read()[:, 0], DIGITS_U8[:4] / np.float32(255))
    assert [len(b) for b in src.batches(3)] == [3, 1]


def test_folder_with_a_non_image_fails_by_default(tmp_path):
    d = _folder(tmp_path)
    (d / "readme.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"readme.txt: not an image file.*skip_bad"):
        open_images(d).read()
    with pytest.raises(InputError, match=re.escape("readme.txt")):
        as_images(d)


def test_folder_skip_bad_skips_and_counts(tmp_path):
    d = _folder(tmp_path)
    (d / "readme.txt").write_text("not an image")
    (d / "zero.png").write_bytes(b"")
    src = open_images(d, skip_bad=True)
    x = src.read()
    assert len(x) == 4
    assert sorted(p.name for p, _ in src.skipped) == ["readme.txt", "zero.png"]


def test_empty_folder_gives_an_empty_batch(tmp_path, vae):
    (tmp_path / "e").mkdir()
    assert open_images(tmp_path / "e").read().shape == (0, 1, 28, 28)
    assert vae.embed(tmp_path / "e").shape == (0, L)


def test_npy_source(tmp_path):
    np.save(tmp_path / "a.npy", DIGITS_U8)
    src = open_images(tmp_path / "a.npy")
    assert src.kind == "npy" and src.count == 5
    np.testing.assert_array_equal(src.read()[:, 0], DIGITS_U8 / np.float32(255))
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    with pytest.raises(InputError, match=r"shape \(3, 5\)"):
        open_images(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object))
    with pytest.raises(InputError, match=re.escape("obj.npy")):
        open_images(tmp_path / "obj.npy")


def _mnist_reference(data_dir: Path) -> np.ndarray:
    path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"  # parsed by hand, independently
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=16).reshape(
        -1, 28, 28
    )


def test_idx_gz_and_raw_stream_in_chunks(data_dir, tmp_path):
    ref = _mnist_reference(data_dir)
    gz = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    chunks = list(iter_idx_images(gz, chunk=3000))
    assert [len(c) for c in chunks] == [3000, 3000, 3000, 1000]
    np.testing.assert_array_equal(np.concatenate(chunks), ref)
    raw = tmp_path / "images-idx3-ubyte"
    raw.write_bytes(gzip.decompress(gz.read_bytes())[: 16 + 784 * 500])
    raw.write_bytes(b"\x00\x00\x08\x03" + (500).to_bytes(4, "big") + raw.read_bytes()[8:])
    src = open_images(raw)
    assert src.kind == "idx" and src.count == 500
    np.testing.assert_array_equal(src.read()[:, 0], ref[:500] / np.float32(255))


def _idx_bytes(
    images: np.ndarray, count: int | None = None, magic: bytes = b"\x00\x00\x08\x03"
) -> bytes:
    n = len(images) if count is None else count
    return magic + b"".join(d.to_bytes(4, "big") for d in (n, *images.shape[1:])) + images.tobytes()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_idx_bytes(DIGITS_U8, count=6), "truncated"),
        (_idx_bytes(DIGITS_U8, count=4), "trailing bytes"),
        (_idx_bytes(np.zeros((2, 27, 28), np.uint8)), "27x28"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5), "labels"),
        (b"\x00\x00\x0d\x03" + bytes(12), "not unsigned byte"),
        (b"\x00\x00\x08\x03\x00", "truncated IDX header"),
    ],
)
def test_bad_idx_files(tmp_path, data, words):
    for name, blob in (("raw-ubyte", data), ("gz-ubyte.gz", gzip.compress(data))):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(InputError, match=words):
            open_images(path).read()


def test_corrupt_gzip_idx(tmp_path):
    blob = bytearray(gzip.compress(_idx_bytes(DIGITS_U8)))
    blob[-6] ^= 0xFF  # damages the CRC
    (tmp_path / "c.gz").write_bytes(bytes(blob))
    with pytest.raises(InputError, match=re.escape("c.gz")):
        open_images(tmp_path / "c.gz").read()


def test_idx_header_reader(data_dir):
    header = read_idx_header(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert (header.count, header.rows, header.cols) == (10000, 28, 28)


# ---- fuzzing --------------------------------------------------------------------------------

IMAGE_SHAPES = st.sampled_from([(28, 28), (2, 28, 28), (1, 1, 28, 28), (3, 784), (0, 784)])
ANY_SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6)
DTYPES = hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=hnp.arrays(DTYPES, IMAGE_SHAPES | ANY_SHAPES), invert=st.booleans())
def test_fuzz_arrays_convert_or_raise_input_error(array, invert):
    try:
        x = as_images(array, invert=invert)
    except InputError as exc:
        assert str(exc)
        return
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 28, 28)
    assert x.flags.c_contiguous
    assert not x.size or (x.min() >= 0 and x.max() <= 1)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600)
    | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM"]).flatmap(
        lambda head: st.binary(max_size=400).map(lambda tail: head + tail)
    )
)
def test_fuzz_bytes_as_a_file(data):
    """Any bytes, whatever they start with (image, npy, IDX or gzip magic): images or InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_bytes(data)
        try:
            x = open_images(path).read()
        except InputError as exc:
            assert str(exc)
            return
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)


@settings(max_examples=100, deadline=None)
@given(
    head=st.sampled_from([b"\x93NUMPY", b"\x00\x00\x08\x03", b"\x1f\x8b"]),
    tail=st.binary(max_size=300),
)
def test_fuzz_npy_idx_gzip_prefixes(head, tail):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_bytes(head + tail)
        try:
            x = open_images(path).read()
        except InputError as exc:
            assert str(exc)
        else:
            assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    Image.fromarray(DIGITS_U8[0]).save(tmp_path / "d.png")
    (tmp_path / "d.png").chmod(0)
    with pytest.raises(InputError, match=re.escape("d.png")):
        as_images(tmp_path / "d.png")
