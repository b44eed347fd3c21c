"""Image files and PIL images as float32 (28, 28) arrays in [0, 1], white ink on black.

Any Pillow-readable format, size and mode: colour becomes luma, 16-bit data is scaled,
transparency becomes background, EXIF orientation is applied, and the picture is fitted
into 28x28 keeping its aspect ratio (docs/runtime.md). Pillow is imported only when an
image is actually read.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np

from .errors import InputError
from .names import display_name

if TYPE_CHECKING:
    from PIL import Image as PILImage

SIDE = 28
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


def is_pil(obj: Any) -> bool:
    """True for a PIL image. PIL is only imported once a caller has used it, so a PIL
    image implies it is loaded, and nothing else needs the import."""
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(obj, image_module.Image)


class PictureReader(Protocol):
    """What turns a decoded PIL image into a model input (``vae_runtime.reading.Reading``;
    :class:`WholeImage` when no model spec applies)."""

    def draft(self, image: PILImage.Image, today: tuple[int, int]) -> None: ...

    def pil(self, image: PILImage.Image, where: str) -> np.ndarray: ...


class WholeImage:
    """The reading without a spec: the whole image fitted into 28x28 (module doc)."""

    def __init__(self, invert: bool = False) -> None:
        self.invert = bool(invert)

    def draft(self, image: PILImage.Image, today: tuple[int, int]) -> None:
        if image.mode in ("RGB", "L", "YCbCr"):
            image.draft("L", today)

    def pil(self, image: PILImage.Image, where: str) -> np.ndarray:
        return image_to_array(image, invert=self.invert, where=where)


def load_image(
    path: str | os.PathLike[str], invert: bool = False, reading: PictureReader | None = None
) -> np.ndarray:
    """One image file as float32 (28, 28) in [0, 1]; any Pillow-readable format and size.
    ``reading``: the model's preprocessing (vae_runtime.reading); None: the whole image
    fitted into 28x28, inverted when ``invert``."""
    path = Path(path)
    return _decode(path, display_name(path), _reading(invert, reading))


def decode_image(
    data: bytes, where: str, invert: bool = False, reading: PictureReader | None = None
) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as :func:`load_image` reads a file; ``where``
    names them in errors (e.g. a table row)."""
    return _decode(io.BytesIO(data), where, _reading(invert, reading))


def read_file_object(file: BinaryIO, where: str, reading: PictureReader) -> np.ndarray:
    """An open binary file (or BytesIO) holding one encoded image, read from where it is."""
    return _decode(file, where, reading)


def _reading(invert: bool, reading: PictureReader | None) -> PictureReader:
    return WholeImage(invert) if reading is None else reading


def _decode(file: Path | BinaryIO, where: str, reading: PictureReader) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as image:
            # JPEG can decode at 1/2..1/8 scale: a huge photo never exists at full size.
            reading.draft(image, _draft_size(image.size))
            return reading.pil(image, where)
    except InputError as exc:
        if str(exc).startswith(where):
            raise
        raise InputError(f"{where}: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{where}: is a directory, not an image file") from None
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{where}: refused as a possible decompression bomb ({exc}); "
            "Pillow's Image.MAX_IMAGE_PIXELS limit applies"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: not an image file (Pillow cannot identify it)") from None
    except Exception as exc:  # any decoder failure on untrusted bytes is a bad input file
        raise InputError(f"{where}: cannot decode image ({_reason(exc)})") from None


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
    try:
        image.load()
        # Read now, applied after resizing: rotating the 28x28 result is cheaper.
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as exc:
        raise InputError(f"{where}: cannot decode image ({_reason(exc)})") from None
    if image.width < 1 or image.height < 1:
        raise InputError(f"{where}: image has no pixels ({image.width}x{image.height})")
    if image.mode == "F":
        raise InputError(
            f"{where}: 32-bit float images (mode F) are not accepted; save as 8 or 16 bit"
        )
    try:
        pixels = _gray_pixels(image, orientation, invert)
    except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        # Pillow's own refusals of odd mode/transparency pairs (LAB with transparency, ...)
        info = " with transparency" if "transparency" in image.info else ""
        raise InputError(
            f"{where}: cannot convert image mode {image.mode}{info} ({_reason(exc)})"
        ) from None
    if invert:
        pixels = 1.0 - pixels
    out = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - pixels.shape[0]) // 2, (SIDE - pixels.shape[1]) // 2
    out[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return out


def _gray_pixels(image: PILImage.Image, orientation: int, invert: bool) -> np.ndarray:
    """The image fitted into 28x28 as float32 gray levels in [0, 1] (not yet inverted)."""
    from PIL import Image

    mode = image.mode
    scale = 255.0
    if mode in SIXTEEN_BIT_MODES:
        image, scale = image.convert("F"), 65535.0
    elif mode in ALPHA_MODES or "transparency" in image.info:
        image = image.convert("RGBA" if mode in ("P", "PA", "RGB", "RGBA", "RGBa") else "LA")
    elif mode != "L":
        try:
            image = image.convert("L")
        except ValueError:
            image = image.convert("RGB").convert("L")

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
    return np.clip(pixels / np.float32(scale), 0.0, 1.0, dtype=np.float32)
