"""JSON read strictly: what Python's json module lets through but no writer of ours
produces, refused, so a document means one thing to every reader.

Refused: a key repeated in one object (json keeps the last, another parser the first),
NaN and Infinity (not JSON), numbers that overflow a float (``1e400`` would be inf),
integers beyond 64 bits (Python's digit limit would raise a bare ValueError), strings
holding lone UTF-16 surrogates (they cannot be encoded again, e.g. as a file name).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_INT_DIGITS = 19  # |value| < 10**19: every int64


class StrictJSONError(ValueError):
    """A document json would load but this reader refuses."""


def loads(text: str | bytes) -> Any:
    """The document in ``text`` (bytes: UTF-8); a ValueError (JSONDecodeError,
    StrictJSONError or UnicodeDecodeError) says why not. RecursionError passes through."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    doc = json.loads(
        text,
        object_pairs_hook=_object,
        parse_constant=_constant,
        parse_int=_int,
        parse_float=_float,
    )
    _check_strings(doc)
    return doc


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJSONError(f"key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise StrictJSONError(f"integer {text[:24]}... has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:24]} overflows a float")
    return value


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StrictJSONError(f"string {value!r} holds a lone surrogate") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
