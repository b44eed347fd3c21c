"""Checks of the plain arguments the public API takes (counts, sizes), and of the size of
the result they ask for."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .errors import InputError

MAX_INT = 2**62  # beyond any count that could be served; keeps numpy's int64 arithmetic exact


def checked_int(value: Any, what: str, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """``value`` as an int (any integer type, not bool), refused outside [minimum, maximum];
    for arguments such as n, steps, k, nrow or batch_size."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value.__index__())
    except (AttributeError, TypeError):
        raise InputError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise InputError(f"{what} must be >= {minimum}, got {number}")
    if number > maximum:
        raise InputError(f"{what} must be <= {maximum}, got {number}")
    return number


@functools.cache
def physical_memory() -> int:
    """Bytes of memory this machine has (2**40 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_fits(count: int, item_bytes: int, what: str) -> None:
    """Refuse a result of ``count`` items of ``item_bytes`` each that could not be held in
    this machine's memory (rather than fail in numpy, or swap, halfway through)."""
    need = count * item_bytes
    if need > physical_memory():
        raise InputError(
            f"{what} would take {need / 2**30:,.1f} GiB, more than this machine's "
            f"{physical_memory() / 2**30:,.1f} GiB of memory"
        )
