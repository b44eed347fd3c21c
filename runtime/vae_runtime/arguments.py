"""Checks of the plain arguments the public API takes (counts, sizes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError


def checked_int(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an int (any integer type, not bool), refused when below ``minimum``;
    for arguments such as n, steps, k, nrow or batch_size."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value.__index__())
    except (AttributeError, TypeError):
        raise InputError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise InputError(f"{what} must be >= {minimum}, got {number}")
    return number
