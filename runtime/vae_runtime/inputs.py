"""Turning what a caller hands over into the graphs' inputs, or refusing it clearly.

Images become float32 (N, 1, 28, 28) in [0, 1] with 0 = background, 1 = ink (white digit on
black, as in MNIST); latents become float32 (N, L). The conventions (accepted shapes and
dtypes, 16-bit and alpha handling, ``invert``) are documented in docs/runtime.md.
A correctly shaped float32 array takes a fast path: a range check and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

SIDE = 28
F32 = np.dtype(np.float32)
ONE_BITS = np.float32(1.0).view(np.uint32)  # 0x3F800000
PIXELS = SIDE * SIDE
IMAGE_SHAPE = (1, SIDE, SIDE)
ACCEPTED_SHAPES = "(28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 784)"
# Downscale in steps (Pillow's reduce) until within this factor of the target, then resample
# with Lanczos: as good as a single Lanczos pass, without touching every source pixel.
REDUCING_GAP = 3.0
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that undoes it (as in PIL.ImageOps.exif_transpose).
EXIF_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")

# What the public API accepts as images: an array, a PIL image, a path, or a list of those.
Images: TypeAlias = "np.ndarray | PILImage.Image | str | os.PathLike[str] | Sequence[Any]"


def as_images(images: Any, invert: bool = False) -> np.ndarray:
    """``images`` as a C-contiguous float32 array (N, 1, 28, 28) in [0, 1].

    ``invert=True`` maps v -> 1 - v, for dark ink on a light background.
    """
    if (
        type(images) is np.ndarray
        and images.dtype is F32
        and images.ndim == 4
        and images.shape[1:] == IMAGE_SHAPE
    ):
        # Fast path, one reduction: read as uint32, a float32 lies in [+0, 1] exactly when its
        # bits are <= those of 1.0 (negatives set the sign bit; NaN and inf are larger).
        # Anything else (including -0.0, which is fine) goes to the full check.
        if images.size and images.view(np.uint32).max() > ONE_BITS:
            _check_range(images)
        x = images if images.flags.c_contiguous else np.ascontiguousarray(images)
        return np.subtract(1.0, x, dtype=np.float32) if invert else x
    return _convert(images, invert)


def _convert(images: Any, invert: bool) -> np.ndarray:
    if isinstance(images, (str, os.PathLike)):
        from .sources import open_images  # sources builds on this module

        return open_images(images, invert=invert).read()
    if _is_pil(images):
        return image_to_array(images, invert=invert)[None, None]
    if isinstance(images, (list, tuple)) and images and all(_is_file_like(i) for i in images):
        return np.concatenate([as_images(i, invert) for i in images])
    if isinstance(images, (bytes, bytearray, memoryview)):
        raise InputError("raw bytes are not images; pass a path, a PIL image or an array")
    try:
        array = np.asarray(images)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"cannot make a numeric array of the images ({exc})") from None
    _check_kind(array, "images")
    x = np.ascontiguousarray(_to_unit_float(_image_shape(array)), dtype=np.float32)
    return np.subtract(1.0, x, dtype=np.float32) if invert else x


def _is_pil(obj: Any) -> bool:
    # PIL is only imported when a caller has used it, so a PIL image implies it is loaded.
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(obj, image_module.Image)


def _is_file_like(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) or _is_pil(obj)


def _check_kind(array: np.ndarray, what: str) -> None:
    """Refuse dtypes that are not image data: only uint8 and floats are."""
    kind = array.dtype.kind
    if kind == "b":
        raise InputError(
            f"{what}: boolean arrays are not accepted; convert to uint8 (0/255) or float (0/1)"
        )
    if kind == "u" and array.dtype.itemsize == 2:
        raise InputError(
            f"{what}: uint16 arrays are not accepted; scale them yourself, to uint8 "
            "(x >> 8) or to float in [0, 1] (x / 65535)"
        )
    if kind == "i" or (kind == "u" and array.dtype.itemsize != 1):
        raise InputError(
            f"{what}: integer arrays must be uint8 (0..255), got {array.dtype}; "
            "convert to uint8 or to float in [0, 1]"
        )
    if kind not in "uf":
        raise InputError(f"{what}: dtype {array.dtype} is not numeric image data")


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """uint8 scaled by 1/255; floats range-checked."""
    if array.dtype.kind == "u":
        return array.astype(np.float32) / np.float32(255.0)
    _check_range(array)
    return array


def _check_range(array: np.ndarray) -> None:
    # NaN makes min/max NaN, so the one comparison also refuses NaN and inf.
    if not array.size or (array.min() >= 0.0 and array.max() <= 1.0):
        return
    if not np.isfinite(array).all():
        raise InputError("images contain NaN or infinite values")
    raise InputError(
        f"float images must lie in [0, 1], got values in [{float(array.min()):.4g}, "
        f"{float(array.max()):.4g}]; divide 0..255 data by 255"
    )


def _image_shape(x: np.ndarray) -> np.ndarray:
    problem = shape_problem(x.shape)
    if problem:
        raise InputError(problem)
    if x.shape == (SIDE, SIDE):
        return x.reshape(1, *IMAGE_SHAPE)
    return x.reshape(len(x), *IMAGE_SHAPE)


def shape_problem(s: tuple[int, ...]) -> str | None:
    """Why an array of shape ``s`` is not a batch of images, or None when it is one."""
    if (
        (len(s) == 4 and s[1:] == IMAGE_SHAPE)
        or (len(s) == 3 and s[1:] == (SIDE, SIDE))
        or (len(s) == 2 and (s == (SIDE, SIDE) or s[1] == PIXELS))
    ):
        return None
    if (len(s) == 4 and 3 in (s[1], s[3])) or (
        len(s) == 3 and s in ((SIDE, SIDE, 3), (3, SIDE, SIDE))
    ):
        return (
            f"images have shape {s}, which looks like 3-channel (colour) data; convert to "
            f"grayscale first (the model reads one channel); accepted shapes: {ACCEPTED_SHAPES}"
        )
    return f"images have shape {s}; accepted shapes: {ACCEPTED_SHAPES}"


def as_latents(z: Any, latent_dim: int) -> np.ndarray:
    """``z`` as a C-contiguous, finite float32 array (N, L); a single (L,) vector is (1, L)."""
    if (
        type(z) is np.ndarray
        and z.dtype is F32
        and z.ndim == 2
        and z.shape[1] == latent_dim
        and z.flags.c_contiguous
    ):
        if not np.isfinite(z).all():
            raise InputError("latents contain NaN or infinite values")
        return z
    return check_latents(z, latent_dim, "latents")


def check_latents(z: Any, latent_dim: int, what: str) -> np.ndarray:
    try:
        array = np.asarray(z)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"cannot make a numeric array of the {what} ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise InputError(f"{what}: dtype {array.dtype} is not a real number type")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise InputError(f"{what} must have shape (N, {latent_dim}), got {array.shape}")
    if array.shape[1] != latent_dim:
        raise InputError(
            f"{what} have width {array.shape[1]}, but the model's latent size is {latent_dim}"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
        out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{what} contain NaN or infinite values (or overflow float32)")
    return out


def count(value: Any, what: str, minimum: int = 1) -> int:
    """An integer argument such as n, steps, k or batch_size, refused when below minimum."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value.__index__())
    except (AttributeError, TypeError):
        raise InputError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise InputError(f"{what} must be >= {minimum}, got {number}")
    return number


# ---- image files and PIL images -------------------------------------------------------------


def load_image(path: str | os.PathLike[str], invert: bool = False) -> np.ndarray:
    """One image file as float32 (28, 28) in [0, 1]; any Pillow-readable format and size."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            # JPEG can decode at 1/2..1/8 scale: a huge photo never exists at full size.
            if image.mode in ("RGB", "L", "YCbCr"):
                image.draft("L", _draft_size(image.size))
            return image_to_array(image, invert=invert, where=str(path))
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path}: refused as a possible decompression bomb ({exc}); "
            "Pillow's Image.MAX_IMAGE_PIXELS limit applies"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Exception as exc:  # any decoder failure on untrusted bytes is a bad input file
        raise InputError(f"{path}: cannot decode image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fit(size: tuple[int, int]) -> tuple[int, int]:
    """The largest size within 28x28 with the image's aspect ratio."""
    w, h = size
    scale = SIDE / max(w, h)
    return max(1, min(SIDE, round(w * scale))), max(1, min(SIDE, round(h * scale)))


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    tw, th = _fit(size)
    return (max(1, int(tw * REDUCING_GAP)), max(1, int(th * REDUCING_GAP)))


def image_to_array(image: PILImage.Image, invert: bool = False, where: str = "image") -> np.ndarray:
    """A PIL image as float32 (28, 28) in [0, 1], white ink on black.

    Colour becomes luma (ITU-R 601-2); 16-bit data is scaled by 1/65535; transparent pixels
    become background (alpha composited over black, or over white when ``invert``, so that
    they end up black either way). The image keeps its aspect ratio: it is resized to fit
    28x28 with Lanczos and centred, padding with background.
    """
    from PIL import Image

    try:
        image.load()
        # Read now, applied after resizing: rotating the 28x28 result is cheaper.
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as exc:
        raise InputError(f"{where}: cannot decode image ({_reason(exc)})") from None
    if image.width < 1 or image.height < 1:
        raise InputError(f"{where}: image has no pixels ({image.width}x{image.height})")
    mode = image.mode
    scale = 255.0
    if mode == "F":
        raise InputError(
            f"{where}: 32-bit float images (mode F) are not accepted; save as 8 or 16 bit"
        )
    if mode in SIXTEEN_BIT_MODES:
        image, scale = image.convert("F"), 65535.0
    elif mode in ALPHA_MODES or "transparency" in image.info:
        image = image.convert("RGBA" if mode in ("P", "PA", "RGB", "RGBA", "RGBa") else "LA")
    elif mode != "L":
        try:
            image = image.convert("L")
        except ValueError:
            try:
                image = image.convert("RGB").convert("L")
            except ValueError:
                raise InputError(f"{where}: unsupported image mode {mode}") from None

    target = _fit(image.size)
    if target != image.size:
        gap = REDUCING_GAP if target[0] < image.width else None
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=gap)

    if orientation in EXIF_TRANSPOSE:
        image = image.transpose(Image.Transpose[EXIF_TRANSPOSE[orientation]])

    if image.mode in ("RGBA", "LA"):
        gray = np.asarray(image.convert("LA"), dtype=np.float32)
        alpha = gray[..., 1] / 255.0
        background = 255.0 if invert else 0.0
        pixels = gray[..., 0] * alpha + background * (1.0 - alpha)
    else:
        pixels = np.asarray(image, dtype=np.float32)
    pixels = np.clip(pixels / np.float32(scale), 0.0, 1.0, dtype=np.float32)
    if invert:
        pixels = 1.0 - pixels
    out = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - pixels.shape[0]) // 2, (SIDE - pixels.shape[1]) // 2
    out[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return out
