"""Parity figures and their bounds (numpy only, so the CLI can use them without torch):
one row per (graph output, inputs, batch size), the bounds they are held to, the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vae_export.errors import ValidationError

PARITY_TOLERANCE = 1e-5
BATCH_SIZES = (1, 7, 128)
# -log p(x|z) per image from ORT's x_hat against PyTorch's, relative. An absolute bound on
# x_hat cannot see an output flushed from 1e-12 to 0, which the log turns into 70 nats.
LIKELIHOOD_REL_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityRow:
    graph: str
    output: str
    inputs: str
    batch: int
    max_abs: float
    max_rel: float  # max |ort - torch| / max |torch|
    mean_abs: float


def compare(graph: str, output: str, inputs: str, got: np.ndarray, want: np.ndarray) -> ParityRow:
    """The row for one output: ``got`` (ONNX Runtime) against ``want`` (PyTorch)."""
    err = np.abs(got.astype(np.float64) - want)
    diff = float(err.max()) if err.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    mean = float(err.mean()) if err.size else 0.0
    return ParityRow(graph, output, inputs, len(want), diff, diff / scale if scale else diff, mean)


def maxima(rows: Sequence[ParityRow], field: str = "max_abs") -> dict[str, float]:
    """The largest ``field`` per output name."""
    out: dict[str, float] = {}
    for r in rows:
        out[r.output] = max(out.get(r.output, 0.0), getattr(r, field))
    return out


def violations(rows: Sequence[ParityRow], tolerance: Mapping[str, float]) -> list[str]:
    """Each row figure above its bound; ``tolerance`` maps "max_abs"/"mean_abs" to bounds."""
    out = []
    for field, bound in tolerance.items():
        for r in rows:
            value = getattr(r, field)
            if value > bound:
                out.append(
                    f"{r.graph} output {r.output!r} differs from PyTorch by {value:.3g} "
                    f"({field.replace('_', ' ')}, batch {r.batch}, {r.inputs}); tolerance {bound:g}"
                )
    return out


def require_within(rows: Sequence[ParityRow], tolerance: float | Mapping[str, float]) -> None:
    bounds = {"max_abs": tolerance} if isinstance(tolerance, (int, float)) else tolerance
    found = violations(rows, bounds)
    if found:
        raise ValidationError(f"parity check failed: {found[0]}")


def rows_as_dicts(rows: Sequence[ParityRow]) -> list[dict[str, object]]:
    return [asdict(r) for r in rows]


def format_table(rows: Sequence[ParityRow]) -> str:
    head = (
        f"{'graph':8} {'output':7} {'inputs':14} {'batch':>6} {'max abs':>10} {'max rel':>10} "
        f"{'mean abs':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.graph:8} {r.output:7} {r.inputs:14} {r.batch:6d} {r.max_abs:10.2e} "
            f"{r.max_rel:10.2e} {r.mean_abs:10.2e}"
        )
    return "\n".join(lines)
