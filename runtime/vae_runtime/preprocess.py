"""Raw images -> model inputs, by the steps a preprocessing spec declares.

Every step is defined exactly in docs/preprocessing.md (which this code follows line by
line), so that the JavaScript runtime in web/ reproduces the result to within one grey
level. numpy only; Pillow is used for decoding files alone (:func:`decode`).

Input: a decoded image, grey (H, W) float in [0, 1] with an optional alpha (H, W), any
size and either polarity. Output: :class:`Prepared`, a float32 (28, 28) image in [0, 1],
white ink on black, with what was decided (polarity) and flags (e.g. no ink at all).
An input of exactly the model's size is already a model input: only alpha and polarity
apply to it, so the datasets' own images pass through bit-identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import InputError
from .resample import resize

if TYPE_CHECKING:
    from PIL import Image as PILImage

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as Pillow's convert("L")
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal
OTSU_BINS = 256
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
READ_AS_IS = ("L", "LA", "RGB", "RGBA")  # modes pixels() reads without a conversion


@dataclass(frozen=True)
class Flag:
    """Why an input may not be what the model was made for. ``code`` is stable ("no_ink";
    issue 19 adds "far_from_data"), ``message`` is a one-line explanation."""

    code: str
    message: str


@dataclass(frozen=True)
class Prepared:
    """A model input and how it was made from the raw image."""

    image: np.ndarray  # float32 (H, W) = spec size, [0, 1], white ink on black
    inverted: bool  # v -> 1 - v was applied (dark ink on light paper)
    decided: bool  # the polarity was decided from the image (invert="auto")
    border: float  # the border statistic the decision compared with the threshold
    passthrough: bool  # model-sized input: no geometric steps were applied
    flags: tuple[Flag, ...] = field(default=())

    @property
    def info(self) -> dict[str, Any]:
        """JSON-able summary, for a CLI or a result's ``info``."""
        return {
            "inverted": self.inverted,
            "polarity": "auto" if self.decided else "forced",
            "border": round(self.border, 4),
            "passthrough": self.passthrough,
            "flags": [f.code for f in self.flags],
        }


# ---- turning arrays and PIL images into grey + alpha ----------------------------------------


def grey_alpha(array: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded image as (grey, alpha) float arrays in [0, 1]; alpha None when opaque.

    ``array``: (H, W), (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA;
    uint8 (/255), uint16 (/65535) or float in [0, 1]. Colour becomes BT.601 luma. A single
    channel is returned as it is (float32), so model-shaped data keeps every bit.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels, a = 1, a[..., None]
    else:
        raise InputError(
            f"an image has shape {a.shape}; accepted: (H, W) or (H, W, C) with C in 1..4"
        )
    x = _unit_float(a)
    alpha = x[..., channels - 1] if channels in (2, 4) else None
    if channels in (1, 2):
        grey = x[..., 0]
    else:
        grey = (LUMA[0] * x[..., 0] + LUMA[1] * x[..., 1] + LUMA[2] * x[..., 2]).astype(np.float32)
    if alpha is not None and alpha.min() >= 1.0:
        alpha = None
    return grey, alpha


def _unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.uint16:
        return (a.astype(np.float64) / 65535.0).astype(np.float32)
    if a.dtype.kind == "f":
        if a.size and not (a.min() >= 0.0 and a.max() <= 1.0):
            raise InputError("float images must lie in [0, 1] (NaN and inf are refused)")
        return a.astype(np.float32, copy=False)
    raise InputError(f"image dtype {a.dtype} is not accepted; use uint8, uint16 or float")


def decode(
    image: PILImage.Image, max_side: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image (any mode Pillow reads, EXIF orientation applied) as (grey, alpha)."""
    return grey_alpha(pixels(readable(image, max_side)))


def readable(image: PILImage.Image, max_side: int | None = None) -> PILImage.Image:
    """``image`` upright (EXIF orientation) in a mode :func:`pixels` reads.

    ``max_side``: the spec's reduce.max_side; a JPEG larger than twice that is decoded at
    a reduced scale (libjpeg's 1/2..1/8 DCT scaling, still >= 2 x max_side), which the
    area reduction then brings down: a 12-megapixel photo never exists at full size.
    """
    from PIL import ImageOps

    if max_side and image.format == "JPEG" and max(image.size) > 2 * max_side:
        k = 2 * max_side / max(image.size)
        image.draft(image.mode, (int(np.ceil(image.width * k)), int(np.ceil(image.height * k))))
    if image.width < 1 or image.height < 1:
        raise InputError(f"image has no pixels ({image.width}x{image.height})")
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I", "F"):
        raise InputError(f"{mode}-mode (32-bit) images are not accepted; save as 8 or 16 bit")
    if mode in SIXTEEN_BIT or (mode in READ_AS_IS and "transparency" not in image.info):
        return image
    try:
        return image.convert(_readable_mode(mode, "transparency" in image.info))
    except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        # Pillow's own refusals of odd mode/transparency pairs (LAB with transparency, ...)
        info = " with transparency" if "transparency" in image.info else ""
        raise InputError(f"cannot convert image mode {mode}{info} ({exc})") from None


def _readable_mode(mode: str, transparency: bool) -> str:
    """The mode a Pillow image is converted to before :func:`pixels`."""
    if mode in ("1", "L", "La", "LA", "I;16") and (transparency or mode in ("La", "LA")):
        return "LA"  # grey with alpha (La is premultiplied: Pillow converts it straight)
    if transparency or mode in ("P", "PA", "RGBa") or "A" in mode:
        return "RGBA"
    return "L" if mode == "1" else "RGB"


def pixels(image: PILImage.Image) -> np.ndarray:
    """The pixels of a :func:`readable` image (or of a crop of one) as an array."""
    if image.mode in SIXTEEN_BIT:
        return np.asarray(image, dtype=np.uint16)
    return np.asarray(image)


# ---- the pipeline ---------------------------------------------------------------------------


def prepare(
    grey: np.ndarray,
    alpha: np.ndarray | None,
    spec: dict[str, Any],
    invert: bool | Literal["auto"] = "auto",
) -> Prepared:
    """One image through the steps of ``spec`` (see the module doc and the design note)."""
    if invert not in ("auto", True, False):
        raise InputError(f'invert must be "auto", True or False, got {invert!r}')
    size = tuple(spec["size"])
    if grey.ndim != 2 or grey.size == 0 or (alpha is not None and alpha.shape != grey.shape):
        shapes = f"{grey.shape}" + ("" if alpha is None else f" with alpha {alpha.shape}")
        raise InputError(f"an image must be (H, W) grey with a matching alpha, got {shapes}")
    if alpha is not None:
        grey = composite(grey, alpha, spec["alpha"], invert)
    if grey.shape == size:
        return _passthrough(grey, spec, invert)
    return prepare_reduced(_reduce(grey, spec["reduce"]["max_side"]), spec, invert)


def prepare_reduced(
    x: np.ndarray, spec: dict[str, Any], invert: bool | Literal["auto"] = "auto"
) -> Prepared:
    """The steps after alpha and the reduction (float64 ``x``, at most reduce.max_side a
    side): shared by :func:`prepare` and the strip-wise reading of large files."""
    size = tuple(spec["size"])
    border = border_statistic(x, spec["polarity"])
    inverted = border > spec["polarity"]["threshold"] if invert == "auto" else bool(invert)
    if inverted:
        x = 1.0 - x
    residual = x - background(x, spec["background"], spec["polarity"]["border"])
    ink, flag = find_ink(residual, spec["ink"], spec["polarity"]["border"])
    info = {"inverted": inverted, "decided": invert == "auto", "border": border}
    if flag is not None:
        return Prepared(np.zeros(size, np.float32), passthrough=False, flags=(flag,), **info)
    top, bottom, left, right = crop_box(ink, spec["crop"])
    patch = fit(ink[top : bottom + 1, left : right + 1], spec["fit"])
    if "sharpen" in spec:
        patch = sharpen(patch, spec["sharpen"])
    out = place(patch, size, spec["center"])
    out = finish(out, spec["stretch"], spec["quantize"])
    return Prepared(out, passthrough=False, **info)


def _passthrough(grey: np.ndarray, spec: dict[str, Any], invert: bool | str) -> Prepared:
    """A model-sized image: only the polarity decision applies, bits are kept."""
    x, inverted, border, no_ink = passthrough_batch(grey[None], spec, invert)
    flags = (_no_ink(f"brightest pixel only {no_ink[0]:.3f} above the border's median"),)
    return Prepared(
        x[0], bool(inverted[0]), invert == "auto", float(border[0]), True,
        flags if no_ink[0] < spec["ink"]["min_contrast"] else (),
    )  # fmt: skip


def passthrough_batch(
    images: np.ndarray, spec: dict[str, Any], invert: bool | Literal["auto"] = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch (N, H, W) of model-sized grey images in one go: (float32 images, inverted,
    border statistic, ink level) per image; ink level = brightest pixel minus the border
    ring's median, after the polarity step (no ink when below ink.min_contrast).

    The same numbers as :func:`prepare` image by image, at numpy speed for big arrays:
    an image that is not inverted comes back with its bits unchanged.
    """
    x = np.ascontiguousarray(images, dtype=np.float32)
    n, h, w = x.shape
    b = max(1, int(np.floor(spec["polarity"]["border"] * min(h, w))))
    if 2 * b >= min(h, w):
        rings = x.reshape(n, -1)
    else:
        rings = np.concatenate([x[:, :b].reshape(n, -1), x[:, h - b :].reshape(n, -1),
                                x[:, b : h - b, :b].reshape(n, -1),
                                x[:, b : h - b, w - b :].reshape(n, -1)], 1)  # fmt: skip
    rings = np.sort(rings, 1)
    m = rings.shape[1]
    border = rings[:, int(np.floor(spec["polarity"]["quantile"] * (m - 1)))].astype(np.float64)
    if invert == "auto":
        inverted = border > spec["polarity"]["threshold"]
    else:
        inverted = np.full(n, bool(invert))
    out = x
    if inverted.any():  # a copy only then: the input may be read-only (mmap, frombuffer)
        out = x.copy()
        out[inverted] = np.subtract(1.0, x[inverted], dtype=np.float32)
    # The lower median of the ring after inversion: 1 - the upper median before it.
    lower, upper = rings[:, (m - 1) // 2], rings[:, m - 1 - (m - 1) // 2]
    paper = np.where(inverted, np.subtract(1.0, upper, dtype=np.float32), lower)
    ink = out.reshape(n, -1).max(1, initial=0.0) - paper
    return out, inverted, border, ink


def composite(grey: np.ndarray, alpha: np.ndarray, rule: str, invert: bool | str) -> np.ndarray:
    """Alpha composited onto black, white, or (rule "ink") the background the ink implies:
    white when the drawn pixels are dark on average, black otherwise. A forced ``invert``
    fixes it: True means dark ink, so white paper."""
    paper = forced_paper(rule, invert)
    if paper is None:
        a = alpha.astype(np.float64)
        paper = ink_paper(a.sum(), (a * grey.astype(np.float64)).sum())
    return onto_paper(grey, alpha, paper)


def forced_paper(rule: str, invert: bool | str) -> float | None:
    """The paper colour the rule or a forced ``invert`` fixes; None: the ink decides."""
    if rule == "white" or (rule == "ink" and invert is True):
        return 1.0
    if rule == "black" or (rule == "ink" and invert is False):
        return 0.0
    return None


def ink_paper(covered: float, ink_sum: float) -> float:
    """White paper when the drawn pixels (alpha sum ``covered``, alpha x grey sum
    ``ink_sum``) are dark on average, else black."""
    return 1.0 if covered > 0 and ink_sum / covered < 0.5 else 0.0


def onto_paper(grey: np.ndarray, alpha: np.ndarray, paper: float) -> np.ndarray:
    g, a = grey.astype(np.float64), alpha.astype(np.float64)
    return (g * a + paper * (1.0 - a)).astype(np.float32)


def _reduce(grey: np.ndarray, max_side: int) -> np.ndarray:
    h, w = grey.shape
    if max(h, w) <= max_side:
        return grey.astype(np.float64)
    k = max_side / max(h, w)
    return resize(grey, (max(1, _round(h * k)), max(1, _round(w * k))), down="area")


def _round(v: float) -> int:
    """Round half up (as JavaScript's Math.round for positive numbers)."""
    return int(np.floor(v + 0.5))


def ring(x: np.ndarray, fraction: float) -> np.ndarray:
    """The pixels within b = max(1, floor(fraction * min(H, W))) of the image's edge."""
    h, w = x.shape
    b = max(1, int(np.floor(fraction * min(h, w))))
    if 2 * b >= min(h, w):
        return x.ravel()
    return np.concatenate([x[:b].ravel(), x[h - b :].ravel(),
                           x[b : h - b, :b].ravel(), x[b : h - b, w - b :].ravel()])  # fmt: skip


def quantile(values: np.ndarray, q: float) -> float:
    """The sorted values' element at index floor(q * (n - 1)): no interpolation."""
    flat = values.ravel()
    k = int(np.floor(q * (flat.size - 1)))
    return float(np.partition(flat, k)[k])


def border_statistic(x: np.ndarray, polarity: dict[str, Any]) -> float:
    """The polarity evidence: a low quantile of the border ring. Above the threshold means
    most of the border is light, i.e. light paper."""
    return quantile(ring(x, polarity["border"]), polarity["quantile"])


def background(x: np.ndarray, rule: dict[str, Any], border: float) -> np.ndarray | float:
    """The estimated paper level under every pixel (ink is bright here)."""
    method = rule["method"]
    if method == "none":
        return 0.0
    if method == "plane":
        return _plane_background(x, border)
    return _block_background(x, rule["grid"], rule["quantile"], rule["filter"], rule["rank"])


def _plane_background(x: np.ndarray, border: float) -> np.ndarray:
    """The least-squares plane a + b*y + c*x through the border ring's pixels: a uniform
    or linearly graded background, seen where a large object leaves paper (the border)."""
    h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w]
    v, y, c = ring(x, border), ring(yy, border) / h, ring(xx, border) / w
    design = np.stack([np.ones_like(v), y, c], 1)
    a, b, cx = np.linalg.solve(design.T @ design, design.T @ v)
    return a + b * (yy / h) + cx * (xx / w)


def _block_background(x: np.ndarray, grid: int, q: float, size: int, rank: float) -> np.ndarray:
    """Per-block quantiles on a grid, then a rank filter over size x size blocks (so that a
    block filled with ink takes its neighbours' paper level), then bilinear between the
    block centres."""
    h, w = x.shape
    b = -(-max(h, w) // grid)  # ceil
    gh, gw = -(-h // b), -(-w // b)
    padded = np.full((gh * b, gw * b), np.nan)
    padded[:h, :w] = x
    blocks = np.sort(padded.reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, -1), -1)
    counts = (~np.isnan(blocks)).sum(-1)  # NaN sorts last
    k = np.floor(q * (counts - 1)).astype(np.intp)
    levels = np.take_along_axis(blocks, k[..., None], -1)[..., 0]
    edge = np.pad(levels, size // 2, mode="edge")
    around = np.sort([edge[i : i + gh, j : j + gw] for i in range(size) for j in range(size)], 0)
    levels = around[int(np.floor(rank * (size * size - 1)))]
    centre_y = (np.arange(gh) * b + (np.minimum(np.arange(1, gh + 1) * b, h) - 1)) / 2.0
    centre_x = (np.arange(gw) * b + (np.minimum(np.arange(1, gw + 1) * b, w) - 1)) / 2.0
    return _interp_matrix(h, centre_y) @ levels @ _interp_matrix(w, centre_x).T


def _interp_matrix(n: int, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) weights of piecewise-linear interpolation through the centres at
    pixels 0..n-1, constant beyond the first and last centre (as numpy.interp)."""
    eye = np.eye(len(centres))
    return np.stack([np.interp(np.arange(n), centres, eye[k]) for k in range(len(centres))], 1)


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold over 256 bins of [0, 1]: the bin edge t/256 that maximises the
    between-class variance (first maximum)."""
    bins = np.minimum((values.ravel() * OTSU_BINS).astype(np.intp), OTSU_BINS - 1)
    hist = np.bincount(bins, minlength=OTSU_BINS).astype(np.float64)
    centres = (np.arange(OTSU_BINS) + 0.5) / OTSU_BINS
    w0 = np.cumsum(hist)[:-1]
    m0 = np.cumsum(hist * centres)[:-1]
    total, mass = w0[-1] + hist[-1], m0[-1] + hist[-1] * centres[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (mass - m0) / w1) ** 2
    between[~np.isfinite(between)] = -1.0
    return (int(np.argmax(between)) + 1) / OTSU_BINS


def find_ink(
    residual: np.ndarray, rule: dict[str, Any], border: float
) -> tuple[np.ndarray, Flag | None]:
    """Ink levels from the paper-flattened residual d, or the no-ink flag.

    r = clip(d, 0, 1); noise sigma = 1.4826 x the median absolute deviation of d over the
    border ring of step 4 (paper, mostly: the noise is measured where the ink is not);
    threshold T = max(Otsu(r) or the fixed level, noise_threshold x sigma); contrast c =
    median of the r >= T; if relative x c > T, then T = relative x c and c is taken again.
    No ink when nothing reaches T, c < min_contrast or c < noise_factor x sigma.
    Levels: "ramp" maps [low*T, c] to [0, 1] (clipped): solid ink with anti-aliased edges,
    as the binary NIST scans MNIST was made from; "keep" keeps r where r >= T, else 0.
    """
    r = np.clip(residual, 0.0, 1.0)
    paper = ring(residual, border)
    sigma = MAD_TO_SIGMA * quantile(np.abs(paper - quantile(paper, 0.5)), 0.5)
    level = otsu(r) if rule["threshold"] == "otsu" else rule["threshold"]
    t = max(level, rule["noise_threshold"] * sigma)
    above = r[r >= t]
    if above.size == 0 or t <= 0.0:
        return r, _no_ink("no pixel stands out from the paper")
    contrast = quantile(above, 0.5)
    if rule["relative"] * contrast > t:  # a threshold too close to the paper: raise it
        t = rule["relative"] * contrast
        contrast = quantile(r[r >= t], 0.5)
    if contrast < rule["min_contrast"] or contrast < rule["noise_factor"] * sigma:
        return r, _no_ink(f"ink contrast {contrast:.3f} against paper noise {sigma:.3f}")
    levels = rule["levels"]
    if levels["method"] == "keep":
        return np.where(r >= t, r, 0.0), None
    low = levels["low"] * t
    return np.clip((r - low) / (contrast - low), 0.0, 1.0), None


def _no_ink(why: str) -> Flag:
    return Flag("no_ink", f"no ink found ({why})")


def crop_box(ink: np.ndarray, rule: dict[str, Any]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive: the rows and columns of the ink, less the
    outermost ``trim`` of its mass on each side (so that a speck of dirt cannot widen it)."""
    return (*_span(ink.sum(1), rule["trim"]), *_span(ink.sum(0), rule["trim"]))


def _span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    """First and last index where the running mass from either end exceeds trim x total."""
    cut = trim * profile.sum()
    first = int(np.argmax(np.cumsum(profile) > cut))
    last = len(profile) - 1 - int(np.argmax(np.cumsum(profile[::-1]) > cut))
    return first, max(first, last)


def fit(patch: np.ndarray, rule: dict[str, Any]) -> np.ndarray:
    """The crop scaled so its longer side is ``box``, keeping the aspect ratio."""
    h, w = patch.shape
    box = rule["box"]
    scale = box / max(h, w)
    shape = (min(box, max(1, _round(h * scale))), min(box, max(1, _round(w * scale))))
    return resize(patch, shape, down=rule["down"], up=rule["up"])


def sharpen(patch: np.ndarray, rule: dict[str, Any]) -> np.ndarray:
    """Unsharp mask: x + amount * (x - gaussian(x)), edges replicated, clipped to [0, 1]."""
    r, sigma = rule["radius"], rule["sigma"]
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2.0 * sigma * sigma))
    k /= k.sum()
    padded = np.pad(patch, r, mode="edge")
    h, w = patch.shape
    rows = sum(k[i] * padded[i : i + h, :] for i in range(2 * r + 1))
    blurred = sum(k[j] * rows[:, j : j + w] for j in range(2 * r + 1))
    return np.clip(patch + rule["amount"] * (patch - blurred), 0.0, 1.0)


def place(patch: np.ndarray, size: tuple[int, ...], rule: dict[str, Any]) -> np.ndarray:
    """The patch on a black canvas: centred as a box, or moved by whole pixels so that its
    centre of mass lands nearest the target (kept inside the canvas)."""
    (hs, ws), (h, w) = size, patch.shape
    if rule["method"] == "box":
        top, left = (hs - h + 1) // 2, (ws - w + 1) // 2
    else:
        mass = patch.sum()
        cy = (patch.sum(1) * np.arange(h)).sum() / mass
        cx = (patch.sum(0) * np.arange(w)).sum() / mass
        ty, tx = rule["target"]
        top = min(max(_round(ty - cy), 0), hs - h)
        left = min(max(_round(tx - cx), 0), ws - w)
    out = np.zeros((hs, ws), np.float64)
    out[top : top + h, left : left + w] = patch
    return out


def finish(x: np.ndarray, stretch: str, levels: int | None) -> np.ndarray:
    """Stretch so the brightest pixel is 1, then round to ``levels`` grey levels."""
    if stretch == "max" and x.max() > 0:
        x = x / x.max()
    x = np.clip(x, 0.0, 1.0)
    if levels:
        x = np.floor(x * levels + 0.5) / levels
    return x.astype(np.float32)
