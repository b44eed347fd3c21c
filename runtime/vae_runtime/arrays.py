"""Numeric arrays as the graphs' inputs, or a clear refusal.

Images become float32 (N, 1, 28, 28) in [0, 1] with 0 = background, 1 = ink (white digit on
black, as in MNIST); latents become float32 (N, L). The accepted shapes and dtypes are
documented in docs/runtime.md. A correctly shaped float32 array takes a fast path: a range
check and nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

SIDE = 28
F32 = np.dtype(np.float32)
ONE_BITS = np.float32(1.0).view(np.uint32)  # 0x3F800000
PIXELS = SIDE * SIDE
IMAGE_SHAPE = (1, SIDE, SIDE)
ACCEPTED_SHAPES = "(28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 784)"


def array_to_images(images: Any, invert: bool = False) -> np.ndarray:
    """A numeric array (or nested sequence) as C-contiguous float32 (N, 1, 28, 28) in [0, 1].

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
    if isinstance(images, (bytes, bytearray, memoryview)):
        raise InputError("raw bytes are not images; pass a path, a PIL image or an array")
    try:
        array = np.asarray(images)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"cannot make a numeric array of the images ({exc})") from None
    check_kind(array, "images")
    x = np.ascontiguousarray(_to_unit_float(_image_shape(array)), dtype=np.float32)
    return np.subtract(1.0, x, dtype=np.float32) if invert else x


def check_kind(array: np.ndarray, what: str) -> None:
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
