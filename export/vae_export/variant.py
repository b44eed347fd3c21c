"""What every variant (int8, fp16, the next one) shares: the fp32 directory it is derived
from and the test data it is judged on, its test negative ELBO against the fp32 graphs,
and its manifest entry.

A variant module converts the graphs and checks them against PyTorch with its own bounds;
building on this module and on the builder, it adds nothing else:

    check = prepare(model_dir, data_dir, "convert to fp16", eval_size=..., seed=...)
    with changed_model_dir(check.source.path) as builder:
        builder.add_bytes("decoder.fp16.onnx", data, "graph")   # plus its own parity checks
        quality = score(builder, check, "fp16", files, bound=0.1, two_sided=True)
        builder.add_variant("fp16", files, entry(files, ..., quality=quality))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vae_export import parity
from vae_export.builder import ModelDirBuilder
from vae_export.data import as_float, split_images
from vae_export.errors import ValidationError
from vae_export.model_source import ModelSource, open_model_dir
from vae_runtime import VAE


@dataclass
class VariantCheck:
    """The fp32 directory a variant starts from, and the test data it is judged on."""

    source: ModelSource
    fp32: VAE
    test_x: np.ndarray  # float32 test images (N, 1, 28, 28)
    eps: np.ndarray  # the noise of the one-sample ELBO estimate, shared by both scores


def prepare(
    model_dir: str | Path, data_dir: str | Path, purpose: str, *, eval_size: int | None, seed: int
) -> VariantCheck:
    source = open_model_dir(model_dir, purpose)
    test = split_images(source.dataset, "test", data_dir, f"the {purpose} check")[:eval_size]
    test_x = as_float(test)
    eps = np.random.default_rng(seed + 1).standard_normal((len(test_x), source.latent_dim))
    return VariantCheck(source, VAE(source.path, threads=None), test_x, eps.astype(np.float32))


def score(
    builder: ModelDirBuilder,
    check: VariantCheck,
    name: str,
    files: Mapping[str, str],
    bound: float,
    two_sided: bool = False,
) -> dict[str, Any]:
    """List variant ``name`` (its graphs already added), load it through the runtime and hold
    its test negative ELBO to within ``bound`` nats of the fp32 graphs' (``two_sided``: in
    either direction, else only a rise counts); returns the manifest's quality section."""
    builder.add_variant(name, files, {})
    nelbo32 = float(check.fp32.score(check.test_x, eps=check.eps).mean())
    nelbo = float(builder.load(name).score(check.test_x, eps=check.eps).mean())
    change = nelbo - nelbo32
    if (abs(change) if two_sided else change) > bound:
        raise ValidationError(
            f"{name} variant changes the test negative ELBO by {change:+.4f} nats (bound {bound})"
        )
    return {
        "test_images": len(check.test_x),
        "test_nelbo_fp32": round(nelbo32, 4),
        f"test_nelbo_{name}": round(nelbo, 4),
        "change": round(change, 4),
    }


def entry(
    files: Mapping[str, str],
    *,
    method: str,
    command: str,
    tolerance: Mapping[str, float],
    max_nelbo_change: float,
    rows: Sequence[parity.ParityRow],
    quality: Mapping[str, Any],
    size_ratio: Mapping[str, float],
    seconds: float,
    **extra: Any,
) -> dict[str, Any]:
    """A variant's manifest entry: its graphs, how they were made, and how they were checked
    (``extra``: what only this variant records)."""
    return {
        **files,
        "method": method,
        **extra,
        "command": command,
        "tolerance": dict(tolerance),
        "max_nelbo_change": max_nelbo_change,
        "parity": {
            "provider": "CPUExecutionProvider",  # validate.ort_session's
            "max_abs": parity.maxima(rows),
            "mean_abs": parity.maxima(rows, "mean_abs"),
        },
        "quality": dict(quality),
        "size_ratio": {role: round(v, 3) for role, v in size_ratio.items()},
        "seconds": round(seconds, 2),
    }
