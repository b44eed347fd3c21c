"""How one call reads raw images: the model's declared preprocessing and the polarity.

A :class:`Reading` is made per call (by :class:`~vae_runtime.VAE` from its manifest's
``preprocess`` section and the caller's ``invert`` / ``preprocess`` arguments) and turns
arrays, PIL images and encoded files into the encoder's input. With a spec, every image
goes through :mod:`vae_runtime.preprocess` (model-sized ones bit-identically); with none
(``"none"``, or a format version 1 directory), it reads as before: the whole image fitted
into 28x28 and inverted only when asked.

It also keeps what was decided: how many images were inverted or flagged, and a note for
each flagged one (the first :data:`NOTES_KEPT`), so a long stream stays in bounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from vae_format.preprocess_spec import SpecError, validate

from .arrays import SIDE, array_to_images, check_kind, shape_problem
from .errors import InputError
from .images import image_to_array
from .large_images import prepare_file
from .preprocess import Prepared, grey_alpha, passthrough_batch, prepare

if TYPE_CHECKING:
    from PIL import Image as PILImage

Invert: TypeAlias = "bool | Literal['auto']"
Preprocess: TypeAlias = "Mapping[str, Any] | Literal['none'] | None"
NOTES_KEPT = 1000
LAYOUTS = (
    "(28, 28), (N, 28, 28), (N, 1, 28, 28), (N, 784), and images of any size: (H, W), "
    "(H, W, C) or (N, H, W, C) with C = 1, 2, 3 or 4 (grey, grey+alpha, RGB, RGBA)"
)


def check_invert(invert: Any) -> bool | Literal["auto"]:
    """``invert`` as True, False or "auto" (numpy booleans too), or an InputError."""
    if isinstance(invert, (bool, np.bool_)):
        return bool(invert)
    if invert == "auto":
        return "auto"
    raise InputError(f'invert must be "auto", True or False, got {invert!r}')


def resolve_spec(preprocess: Any, declared: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec a call uses: ``declared`` (the manifest's) unless ``preprocess`` overrides it
    ("none" or a spec dict); None means today's whole-image reading."""
    if preprocess is None:
        return None if declared is None else dict(declared)
    try:
        return validate(preprocess, "preprocess")
    except SpecError as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class Note:
    """A flagged image: where it came from (file name or ``images[i]``) and why."""

    where: str
    code: str
    message: str


@dataclass
class Reading:
    """One call's way of reading images (module doc). ``spec`` None: as before issue 12."""

    spec: dict[str, Any] | None = None
    invert: bool | Literal["auto"] = False
    images: int = 0  # images read through the spec
    inverted: int = 0  # of those, inverted (decided or forced)
    flagged: int = 0
    notes: list[Note] = field(default_factory=list)
    infos: list[dict[str, Any]] | None = None  # per-image decisions, when asked to keep them

    def __post_init__(self) -> None:
        self.invert = check_invert(self.invert)
        if self.spec is None and self.invert == "auto":
            self.invert = False  # nothing decides without a spec: today's default

    @property
    def legacy(self) -> bool:
        return self.spec is None

    def summary(self) -> dict[str, Any]:
        """JSON-able counts and the kept notes, for a CLI summary."""
        return {
            "preprocess": "none" if self.spec is None else "spec",
            "invert": self.invert,
            "images": self.images,
            "inverted": self.inverted,
            "flagged": self.flagged,
            "flags": [{"where": n.where, "code": n.code, "message": n.message} for n in self.notes],
        }

    # ---- arrays -------------------------------------------------------------------------

    def arrays(self, images: Any, where: str = "images") -> np.ndarray:
        """An array (or nested list) of images as float32 (N, 1, 28, 28): see LAYOUTS."""
        if self.legacy:
            return array_to_images(images, bool(self.invert))
        array = _as_array(images)
        if array.dtype != np.uint16:  # 16-bit pictures are scaled; other refusals as before
            check_kind(array, "images")
        layout = _layout(array.shape)
        if layout == "model":  # exact: scaled as today, then only the polarity rule
            x = array_to_images(array, False)
            return self._batch(x[:, 0], where)[:, None]
        if layout == "keras":
            x = array_to_images(array[..., 0], False)
            return self._batch(x[:, 0], where)[:, None]
        batch = array[None] if layout == "image" else array
        out = np.empty((len(batch), 1, SIDE, SIDE), np.float32)
        for i, one in enumerate(batch):
            name = where if layout == "image" else f"{where}[{i}]"
            out[i, 0] = self._prepare(*grey_alpha(one), name)
        return out

    def _batch(self, x: np.ndarray, where: str) -> np.ndarray:
        """Model-sized grey images (N, 28, 28): polarity and no-ink flag, bits kept."""
        assert self.spec is not None
        if not len(x):
            return x
        out, inverted, border, ink = passthrough_batch(x, self.spec, self.invert)
        self.images += len(x)
        self.inverted += int(inverted.sum())
        low = ink < self.spec["ink"]["min_contrast"]
        for i in np.flatnonzero(low):
            message = f"no ink found (brightest pixel only {ink[i]:.3f} above the paper)"
            self.flag(f"{where}[{i}]" if len(x) > 1 else where, "no_ink", message)
        if self.infos is not None:
            for i in range(len(x)):
                self.infos.append({
                    "inverted": bool(inverted[i]),
                    "polarity": "auto" if self.invert == "auto" else "forced",
                    "border": round(float(border[i]), 4),
                    "passthrough": True,
                    "flags": ["no_ink"] if low[i] else [],
                })  # fmt: skip
        return out

    def batch_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        """``shape`` with a leading batch axis (a file of arrays is read in slices of it),
        or an InputError naming ``where`` and the accepted layouts."""
        if self.legacy:
            problem = shape_problem(shape)
            if problem:
                raise InputError(f"{where}: {problem}")
            return (1, *shape) if shape == (SIDE, SIDE) else shape
        try:
            layout = _layout(shape)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if layout == "image":
            return (1, *shape) if len(shape) == 3 else (1, *shape, 1)
        return (1, *shape) if shape == (SIDE, SIDE) else shape

    # ---- pictures -----------------------------------------------------------------------

    def pil(self, image: PILImage.Image, where: str) -> np.ndarray:
        """A PIL image as float32 (28, 28) (decoding errors are the caller's to name)."""
        if self.legacy:
            return image_to_array(image, invert=bool(self.invert), where=where)
        assert self.spec is not None
        prepared = prepare_file(image, self.spec, self.invert)
        self._count(prepared, where)
        return prepared.image

    def draft(self, image: PILImage.Image, today: tuple[int, int]) -> None:
        """Let a JPEG decode at a reduced scale: to ``today`` (the legacy reading's size)
        or, with a spec, as :func:`vae_runtime.preprocess.decode` decides."""
        if self.legacy and image.mode in ("RGB", "L", "YCbCr"):
            image.draft("L", today)

    def _prepare(self, grey: np.ndarray, alpha: np.ndarray | None, where: str) -> np.ndarray:
        assert self.spec is not None
        if grey.size == 0:
            raise InputError(f"{where}: image has no pixels ({grey.shape})")
        prepared = prepare(grey, alpha, self.spec, self.invert)
        self._count(prepared, where)
        return prepared.image

    def _count(self, prepared: Prepared, where: str) -> None:
        self.images += 1
        self.inverted += prepared.inverted
        for flag in prepared.flags:
            self.flag(where, flag.code, flag.message)
        if self.infos is not None:
            self.infos.append(prepared.info)

    def flag(self, where: str, code: str, message: str) -> None:
        """Count a flagged image; keep its note (the first NOTES_KEPT)."""
        self.flagged += 1
        if len(self.notes) < NOTES_KEPT:
            self.notes.append(Note(where, code, message))


def _as_array(images: Any) -> np.ndarray:
    """``images`` as an array; nested lists of integers 0..255 become uint8 (JSON pixels)."""
    if isinstance(images, np.ndarray):
        return images
    try:
        array = np.asarray(images)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"cannot make a numeric array of the images ({exc})") from None
    if array.dtype.kind in "iu" and array.size:
        if array.min() < 0 or array.max() > 255:
            raise InputError(
                f"integer pixel values must lie in 0..255, got {array.min()}..{array.max()}"
            )
        return array.astype(np.uint8)
    if array.dtype.kind in "iu":
        return array.astype(np.uint8)
    return array


def _layout(shape: tuple[int, ...]) -> str:
    """ "model" (today's shapes), "keras" (N, 28, 28, 1), "image" (one picture) or
    "images" (N pictures); anything else is refused naming the accepted layouts."""
    s, model = shape, (SIDE, SIDE)
    if (
        (len(s) == 4 and s[1:] == (1, SIDE, SIDE))
        or (len(s) == 3 and s[1:] == model)
        or (len(s) == 2 and (s == model or s[1] == SIDE * SIDE))
    ):
        return "model"
    if len(s) == 4 and s[1:] == (SIDE, SIDE, 1):
        return "keras"
    if len(s) == 2 and min(s) > 0:
        return "image"
    if len(s) == 3 and s[2] in (1, 2, 3, 4) and min(s) > 0:
        return "image"
    if len(s) == 4 and s[3] in (1, 2, 3, 4) and min(s[1:]) > 0:
        return "images"
    hint = ""
    if len(s) == 4 and s[1] in (1, 3, 4):
        hint = " (3-channel or channels-first data? move the channel axis last: (N, H, W, C))"
    elif len(s) == 3:
        hint = (
            " (a batch of grey images of another size than 28x28 is ambiguous: give it as "
            "(N, H, W, 1))"
        )
    raise InputError(f"images have shape {s}{hint}; accepted layouts: {LAYOUTS}")
