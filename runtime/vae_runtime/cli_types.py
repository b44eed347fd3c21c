"""argparse types shared by the CLIs (vae-run, its Ray options, vae-export): each turns a
command-line string into a checked value or an ArgumentTypeError, which argparse prints as
a one-line usage error."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
seed_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 (batch sizes)."""
    sizes = _ints(text)
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return sizes


def count_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 0."""
    counts = _ints(text)
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {text!r}")
    return counts


def precision_list(text: str) -> list[str]:
    """An argparse type: comma-separated OpenVINO precisions."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in ("f32", "bf16")]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected f32 and/or bf16 (comma-separated), got {text!r}"
        )
    return names
