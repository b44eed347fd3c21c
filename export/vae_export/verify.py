"""Re-check an existing model directory against the checkpoints it carries, and the policy
of which bounds hold: the default graphs meet the tolerance their manifest records plus the
likelihood bound; a variant meets its own recorded tolerance (its quality is held to an
ELBO budget when it is built, so the likelihood rows are shown but not judged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vae_export import parity, validate
from vae_export.data import prior_latents, sample_test_images
from vae_export.model_source import ModelSource, open_model_dir


@dataclass
class VerifyReport:
    model_dir: Path
    variant: str | None
    rows: list[parity.ParityRow]
    bounds: dict[str, float]  # for the graph rows
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """The parity table, the first problems, and the worst figure against each bound."""
        head = f"== {self.model_dir}" + (f" ({self.variant})" if self.variant else "")
        lines = [head, parity.format_table(self.rows)]
        lines += [f"FAILED: {line}" for line in self.problems[:5]]
        graph_rows = [r for r in self.rows if r.output != "nll"]
        worst = {f: max(getattr(r, f) for r in graph_rows) for f in self.bounds}
        figures = ", ".join(
            f"{f.replace('_', ' ')} {v:.2e} (bound {self.bounds[f]:g})" for f, v in worst.items()
        )
        lines.append(f"{figures}: {'ok' if self.ok else 'FAILED'}\n")
        return "\n".join(lines)


def bounds_for(source: ModelSource, variant: str | None, tolerance: float | None) -> dict:
    """The bounds the graph rows are held to: ``tolerance`` if given, else the manifest's."""
    if tolerance is not None:
        return {"max_abs": tolerance}
    if variant:
        return dict(source.manifest.section("variants")[variant]["tolerance"])
    return {"max_abs": source.manifest.section("parity", {}).get("tolerance", 1e-5)}


def check_model_dir(
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    batch_sizes: Sequence[int] = parity.BATCH_SIZES,
    variant: str | None = None,
    tolerance: float | None = None,
) -> VerifyReport:
    """Verify ``model_dir`` (or one of its variants) and judge the rows by the policy."""
    source = open_model_dir(model_dir, "verify")
    rows = parity_rows(source, data_dir, batch_sizes, variant)
    bounds = bounds_for(source, variant, tolerance)
    problems = parity.violations([r for r in rows if r.output != "nll"], bounds)
    if not variant:
        nll = [r for r in rows if r.output == "nll"]
        problems += parity.violations(nll, {"max_rel": parity.LIKELIHOOD_REL_TOLERANCE})
    return VerifyReport(source.path, variant, rows, bounds, problems)


def parity_rows(
    source: ModelSource,
    data_dir: str | Path | None,
    batch_sizes: Sequence[int],
    variant: str | None,
) -> list[parity.ParityRow]:
    """Test images (when ``data_dir`` is given), uniform noise and prior draws."""
    ckpt, files = source.checkpoint, source.graph_files(variant)
    enc = validate.ort_session(str(source.path / files["encoder"]))
    dec = validate.ort_session(str(source.path / files["decoder"]))
    images = None
    if data_dir is not None:
        images = sample_test_images(source.dataset, data_dir, max(batch_sizes))
    rows = encoder_rows(ckpt.encoder, enc, images, batch_sizes)
    if images is not None:
        rows += validate.likelihood_parity(
            ckpt.encoder, ckpt.decoder, dec, images, source.likelihood, batch_sizes
        )
    return rows + decoder_rows(ckpt.decoder, dec, source.latent_dim, batch_sizes)


def encoder_rows(
    encoder: Any, session: Any, images: np.ndarray | None, batch_sizes: Sequence[int]
) -> list[parity.ParityRow]:
    """An encoder graph against PyTorch on ``images`` (if any) and on uniform noise, the
    far-from-data input the out-of-distribution score sees. A variant builder holds its
    graphs to these same rows, so what it ships passes ``verify``."""
    rows = []
    if images is not None:
        rows += validate.encoder_parity(encoder, session, images, "test images", batch_sizes)
    noise = uniform_noise(max(batch_sizes))
    return rows + validate.encoder_parity(encoder, session, noise, "uniform noise", batch_sizes)


def decoder_rows(
    decoder: Any, session: Any, latent_dim: int, batch_sizes: Sequence[int]
) -> list[parity.ParityRow]:
    """A decoder graph against PyTorch on draws from the prior."""
    latents = prior_latents(latent_dim, max(batch_sizes))
    return validate.decoder_parity(decoder, session, latents, "N(0,I)", batch_sizes)


def uniform_noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)
