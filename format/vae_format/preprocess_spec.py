"""The declarative preprocessing spec: how a raw image becomes a model input.

A spec is a small JSON-able dict (the future manifest ``preprocess`` section) naming a fixed
sequence of steps and their parameters; docs/preprocessing.md defines every step exactly,
so that any runtime (Python here, JavaScript in web/) computes the same input. The string
``"none"`` means today's behaviour (the whole image resized into 28x28, no decisions).

Pure standard library: export writes a spec and every runtime checks it on load, so it
lives in the shared format package (docs/model-format.md, format version 2).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

SECTION = "preprocess"  # the manifest key (format version 2 on)
SPEC_VERSION = 1
NONE = "none"

# The sections of a spec, in the order the steps run. Sections marked optional may be
# absent (the step is skipped); the others must be present.
SECTIONS = (
    "version",
    "size",
    "alpha",
    "polarity",
    "reduce",
    "background",
    "ink",
    "crop",
    "fit",
    "sharpen",
    "center",
    "stretch",
    "quantize",
)
OPTIONAL = frozenset({"sharpen"})

MNIST: dict[str, Any] = {
    "version": 1,
    "size": [28, 28],
    "alpha": "ink",
    "polarity": {"border": 0.04, "quantile": 0.25, "threshold": 0.5},
    "reduce": {"max_side": 256},
    "background": {"method": "blocks", "grid": 8, "quantile": 0.5, "filter": 3, "rank": 0.5},
    "ink": {
        "threshold": "otsu",
        "noise_threshold": 3.0,
        "relative": 0.5,
        "min_contrast": 0.1,
        "noise_factor": 6.0,
        "levels": {"method": "ramp", "low": 0.5},
    },
    "crop": {"method": "mass", "trim": 0.002},
    "fit": {"box": 20, "down": "area", "up": "linear"},
    "center": {"method": "mass", "target": [14, 14]},
    "stretch": "max",
    "quantize": 255,
}

FASHION_MNIST: dict[str, Any] = {
    "version": 1,
    "size": [28, 28],
    "alpha": "ink",
    "polarity": {"border": 0.04, "quantile": 0.25, "threshold": 0.5},
    "reduce": {"max_side": 256},
    "background": {"method": "plane"},
    "ink": {
        "threshold": 0.05,
        "noise_threshold": 3.0,
        "relative": 0.0,
        "min_contrast": 0.05,
        "noise_factor": 6.0,
        "levels": {"method": "keep"},
    },
    "crop": {"method": "mass", "trim": 0.002},
    "fit": {"box": 28, "down": "area", "up": "linear"},
    "sharpen": {"sigma": 1.0, "radius": 1, "amount": 1.0},
    "center": {"method": "box"},
    "stretch": "max",
    "quantize": 255,
}

BUILTIN: dict[str, dict[str, Any]] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


class SpecError(ValueError):
    """A spec that is not a valid preprocessing spec; the message is one line."""


def builtin(dataset: str) -> dict[str, Any]:
    """A copy of the shipped spec for a dataset name ("mnist" or "fashion-mnist")."""
    if dataset not in BUILTIN:
        raise SpecError(f"no preprocessing spec for dataset {dataset!r}; known: {sorted(BUILTIN)}")
    return copy.deepcopy(BUILTIN[dataset])


def validate(spec: Any, where: str = "preprocess") -> dict[str, Any] | None:
    """``spec`` checked: None for "none", else the spec itself; SpecError names the fault."""
    if spec == NONE:
        return None
    if not isinstance(spec, Mapping):
        raise SpecError(f'{where}: must be "none" or an object, got {type(spec).__name__}')
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise SpecError(f"{where}: unknown step(s) {unknown}; known: {list(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in spec and s not in OPTIONAL]
    if missing:
        raise SpecError(f"{where}: missing step(s) {missing}")
    if spec["version"] != SPEC_VERSION or isinstance(spec["version"], bool):
        raise SpecError(f"{where}.version: must be {SPEC_VERSION}, got {spec['version']!r}")
    for name in SECTIONS[1:]:
        if name in spec:
            _CHECKS[name](spec[name], f"{where}.{name}")
    _check_geometry(spec, where)
    return dict(spec)


# ---- per-step checks ------------------------------------------------------------------------


def _number(value: Any, where: str, lo: float, hi: float, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}: must be {kind}, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{where}: must lie in [{lo}, {hi}], got {value!r}")


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{where}: must be one of {list(choices)}, got {value!r}")


def _object(value: Any, where: str, fields: Mapping[str, Callable[[Any, str], None]]) -> None:
    """An object whose keys are exactly ``fields``, each checked by its function."""
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be an object, got {value!r}")
    unknown, missing = sorted(set(value) - set(fields)), sorted(set(fields) - set(value))
    if unknown:
        raise SpecError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    if missing:
        raise SpecError(f"{where}: missing parameter(s) {missing}")
    for key, check in fields.items():
        check(value[key], f"{where}.{key}")


def _pair(value: Any, where: str, lo: float, hi: float, integer: bool) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(f"{where}: must be a list of two numbers, got {value!r}")
    for i, v in enumerate(value):
        _number(v, f"{where}[{i}]", lo, hi, integer)


def _unit(lo: float = 0.0, hi: float = 1.0) -> Callable[[Any, str], None]:
    return lambda v, w: _number(v, w, lo, hi)


def _int(lo: int, hi: int) -> Callable[[Any, str], None]:
    return lambda v, w: _number(v, w, lo, hi, integer=True)


def _one_of(*choices: str) -> Callable[[Any, str], None]:
    return lambda v, w: _choice(v, w, choices)


def _variant(methods: Mapping[str, Mapping[str, Callable[[Any, str], None]]]):
    """An object whose ``method`` picks the parameters it must have."""

    def check(value: Any, where: str) -> None:
        method = value.get("method") if isinstance(value, Mapping) else None
        if not isinstance(method, str) or method not in methods:
            raise SpecError(f"{where}.method: must be one of {list(methods)}, got {method!r}")
        _object(value, where, {"method": _one_of(method), **methods[method]})

    return check


def _fields(**fields: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    return lambda v, w: _object(v, w, fields)


def _odd(lo: int, hi: int) -> Callable[[Any, str], None]:
    def check(value: Any, where: str) -> None:
        _number(value, where, lo, hi, integer=True)
        if value % 2 == 0:
            raise SpecError(f"{where}: must be odd, got {value}")

    return check


def _levels_or_none(value: Any, where: str) -> None:
    if value is not None:
        _number(value, where, 2, 65535, integer=True)


def _target(value: Any, where: str) -> None:
    _pair(value, where, 0, 4096, integer=False)


def _threshold(value: Any, where: str) -> None:
    if value != "otsu":
        _number(value, where, 0.0, 1.0)


_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "size": lambda v, w: _pair(v, w, 1, 4096, integer=True),
    "alpha": _one_of("ink", "black", "white"),
    "polarity": _fields(border=_unit(0.0, 0.5), quantile=_unit(), threshold=_unit()),
    "reduce": _fields(max_side=_int(8, 8192)),
    "background": _variant(
        {
            "blocks": {
                "grid": _int(1, 64),
                "quantile": _unit(),
                "filter": _odd(1, 15),
                "rank": _unit(),
            },
            "plane": {},
            "none": {},
        }
    ),
    "ink": _fields(
        threshold=_threshold,
        noise_threshold=_unit(0.0, 100.0),
        relative=_unit(),
        min_contrast=_unit(),
        noise_factor=_unit(0.0, 100.0),
        levels=_variant({"ramp": {"low": _unit()}, "keep": {}}),
    ),
    "crop": _variant({"mass": {"trim": _unit(0.0, 0.1)}}),
    "fit": _fields(box=_int(1, 4096), down=_one_of("area"), up=_one_of("linear", "area")),
    "sharpen": _fields(sigma=_unit(0.1, 10.0), radius=_int(1, 10), amount=_unit(0.0, 10.0)),
    "center": _variant({"mass": {"target": _target}, "box": {}}),
    "stretch": _one_of("max", "none"),
    "quantize": _levels_or_none,
}


def _check_geometry(spec: Mapping[str, Any], where: str) -> None:
    """What one step requires of another: the fitted box and the centre lie in the canvas."""
    height, width = spec["size"]
    if spec["fit"]["box"] > min(height, width):
        raise SpecError(f"{where}.fit.box: {spec['fit']['box']} does not fit in size "
                        f"{height}x{width}")  # fmt: skip
    center = spec["center"]
    if center["method"] == "mass":
        ty, tx = center["target"]
        if not (0 <= ty <= height - 1 and 0 <= tx <= width - 1):
            raise SpecError(f"{where}.center.target: {center['target']} lies outside the "
                            f"{height}x{width} canvas")  # fmt: skip
