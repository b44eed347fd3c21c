"""What ``vae-run`` tells the user: progress bars, summary lines (or one JSON object with
``--json``), and the inputs that were skipped or ignored, every file name escaped.

Summaries go to stdout, or to stderr when stdout carries data (``--out -``), so that a
pipe receives only the data. ``-q`` silences summaries and progress; ``-v`` lists every
skipped file (otherwise the first 10) and names the model and engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from .names import data_name, display_name
from .records import ImageSource

PROG = "vae-run"
LISTED = 10  # skipped files listed without -v


def summary_stream(args: argparse.Namespace) -> IO[str]:
    out = getattr(args, "out", None) or []
    outs = [str(o) for o in (out if isinstance(out, list) else [out])]
    return sys.stderr if "-" in outs else sys.stdout


@contextmanager
def progress(args: argparse.Namespace, total: int | None, desc: str) -> Iterator[Any]:
    """A tqdm bar on stderr when it is a terminal (not with -q or --no-progress)."""
    from tqdm import tqdm  # lazy: only the streaming commands draw a bar

    enabled = (
        not getattr(args, "no_progress", False)
        and not getattr(args, "quiet", False)
        and sys.stderr.isatty()
    )
    total = None if total is None or total < 0 else total
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled) as bar:
        yield bar


def source_facts(source: ImageSource) -> dict[str, Any]:
    """Skipped, ignored and unread entries of a source, and what preprocessing decided
    and flagged, for --json (names as data)."""
    facts = {
        "skipped": [{"file": data_name(p), "error": e} for p, e in source.skipped],
        "ignored": [data_name(p) for p in source.ignored],
        "subfolders_not_read": [data_name(p) for p in source.subfolders],
    }
    if source.reading is not None:
        facts["preprocessing"] = source.reading.summary()
    return facts


def reading_notes(source: ImageSource, verbose: bool) -> list[str]:
    """Warnings for flagged images (no ink; far from the training data) and what the
    polarity rule decided."""
    reading = source.reading
    if reading is None:
        return []
    shown = reading.notes if verbose else reading.notes[:LISTED]
    lines = [f"warning: {n.where}: {n.message}" for n in shown]
    if reading.flagged > len(shown):
        lines.append(
            f"warning: ... and {reading.flagged - len(shown)} more flagged (-v lists them)"
        )
    if reading.invert == "auto" and reading.inverted:
        lines.append(
            f"inverted {reading.inverted} of {reading.images} images: dark ink on light "
            "paper, decided from their borders (--invert no keeps them as they are)"
        )
    return lines


def source_notes(source: ImageSource, verbose: bool) -> list[str]:
    """Lines about the inputs that were not embedded, names escaped (one line each)."""
    lines = []
    if source.skipped:
        shown = source.skipped if verbose else source.skipped[:LISTED]
        lines.append(f"skipped {len(source.skipped)} unreadable file(s):")
        lines += [f"  {display_name(p)}" + (f": {e}" if verbose else "") for p, e in shown]
        if len(shown) < len(source.skipped):
            lines.append(f"  ... and {len(source.skipped) - len(shown)} more (-v lists all)")
    if source.ignored:
        names = ", ".join(display_name(p.name) for p in source.ignored[:LISTED])
        more = ", ..." if len(source.ignored) > LISTED else ""
        lines.append(f"ignored {len(source.ignored)} hidden or non-image file(s): {names}{more}")
    if source.subfolders:
        lines.append(
            f"did not read {len(source.subfolders)} subfolder(s) (--recursive reads them): "
            + ", ".join(display_name(p.name) for p in source.subfolders[:LISTED])
            + (", ..." if len(source.subfolders) > LISTED else "")
        )
    return lines


def report(args: argparse.Namespace, summary: dict[str, Any], lines: list[str]) -> None:
    """Print the summary: JSON with --json, else the lines (nothing with -q)."""
    out = summary_stream(args)
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2, ensure_ascii=False), file=out)
    elif not getattr(args, "quiet", False):
        for line in lines:
            print(line, file=out)


def notes(args: argparse.Namespace, source: ImageSource) -> None:
    """Skipped/ignored inputs on stderr (not with -q or --json, which carry them)."""
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return
    verbose = getattr(args, "verbose", False)
    for line in source_notes(source, verbose) + reading_notes(source, verbose):
        print(f"{PROG}: {line}" if not line.startswith("  ") else line, file=sys.stderr)
