"""The out-of-distribution score, in numpy (docs/ood.md; the manifest section is
vae_format.ood).

A likelihood alone fails in one direction: a Bernoulli VAE trained on Fashion-MNIST gives
MNIST digits a *higher* likelihood than its own images, because near-binary pixels cost
almost nothing under a Bernoulli likelihood whatever the model has learnt. Two statistics
per image, both deterministic (z = mu, no sampling), fix that:

- ``excess_nelbo`` = negative ELBO at z = mu minus the likelihood's floor, the least
  -log p(x|x_hat) any decoder output could give this image (for the Bernoulli likelihood,
  the pixel entropy below; for the Gaussian, its constant). It is a likelihood ratio
  against the saturated model, which removes the input's own complexity from the score.
- ``pixel_entropy`` = sum_i h(x_i), h(p) = -p ln p - (1 - p) ln(1 - p): how much grey the
  image holds (0 for a blank or purely black-and-white image).

Each is compared with the training images on both sides (typicality: too easy is as
suspicious as too hard; that is how a blank canvas is caught), as a robust z-score: the
distance from the training median in units of the training spread on that side,
``(value - p50) / (p90 - p50)`` above the median, ``(p50 - value) / (p50 - p10)`` below
(the spreads differ because both statistics are skewed). The score is the larger of the
two z-scores; 1 means as far out as the 10th or 90th percentile of the training images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vae_format.manifest import Manifest
from vae_format.ood import FPRS, METHOD, SECTION, STATISTICS, VERSION, is_known

from . import likelihood as lik
from .errors import InputError, ModelFormatError
from .sampling import clamp_logvar

Statistics = Mapping[str, np.ndarray]
DEFINITIONS = {
    "excess_nelbo": "-log p(x|decode(mu)) + KL(q(z|x) || N(0, I)) - min over x_hat of "
    "-log p(x|x_hat), nats",
    "pixel_entropy": "sum over pixels of -x ln x - (1 - x) ln(1 - x), 0 ln 0 = 0, nats",
}
MIN_FALSE_POSITIVES = 5
SCORE = (
    "max over the statistics of (value - p50) / (p90 - p50) above p50, "
    "(p50 - value) / (p50 - p10) below"
)


def pixel_entropy(x: np.ndarray) -> np.ndarray:
    """sum_i h(x_i) per image in nats, float64 (N,); x in [0, 1], shape (N, ...)."""
    p = np.asarray(x, np.float64).reshape(len(x), -1)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 * log 0 is 0: masked below
        h = -(p * np.log(p) + (1.0 - p) * np.log1p(-p))
    return np.where((p > 0.0) & (p < 1.0), h, 0.0).sum(axis=1)


def likelihood_floor(x: np.ndarray, likelihood: str, sigma: float | None) -> np.ndarray:
    """min over x_hat of -log p(x | x_hat) per image (x_hat = x), float64 (N,)."""
    if likelihood == "bernoulli":
        return pixel_entropy(x)
    if likelihood == "gaussian":
        if sigma is None or not sigma > 0:
            raise ModelFormatError(f"gaussian likelihood needs sigma > 0, got {sigma!r}")
        d = int(np.prod(np.shape(x)[1:]))
        return np.full(len(x), 0.5 * d * math.log(2.0 * math.pi * sigma**2))
    raise ModelFormatError(f"unknown likelihood {likelihood!r}")


def statistics(
    x: np.ndarray,
    mu: np.ndarray,
    logvar: np.ndarray,
    x_hat: np.ndarray,
    likelihood: str = "bernoulli",
    sigma: float | None = None,
) -> dict[str, np.ndarray]:
    """The two statistics (float64 (N,) each) from the images, the encoder's outputs and
    x_hat = decode(mu)."""
    nelbo_at_mu = lik.reconstruction_nll(x_hat, x, likelihood, sigma) + (
        lik.kl_to_standard_normal(mu, clamp_logvar(logvar))
    )
    return {
        "excess_nelbo": nelbo_at_mu - likelihood_floor(x, likelihood, sigma),
        "pixel_entropy": pixel_entropy(x),
    }


def zscores(stats: Statistics, section: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each statistic's distance from the training median, in units of the training
    spread on its side (p90 - p50 above, p50 - p10 below)."""
    out = {}
    for name in STATISTICS:
        p = section["statistics"][name]
        v = np.asarray(stats[name], np.float64)
        above = (v - p["p50"]) / (p["p90"] - p["p50"])
        below = (p["p50"] - v) / (p["p50"] - p["p10"])
        out[name] = np.where(v >= p["p50"], above, below)
    return out


def score(stats: Statistics, section: Mapping[str, Any]) -> np.ndarray:
    """The OOD score, float64 (N,): the larger z-score (>= 0); higher = more anomalous."""
    z = zscores(stats, section)
    return np.maximum.reduce([z[name] for name in STATISTICS])


def threshold(section: Mapping[str, Any], fpr: float) -> float:
    """The calibrated threshold at false-positive rate ``fpr`` (one the section lists)."""
    rows = {row["fpr"]: row["threshold"] for row in section["thresholds"]}
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.floating)):
        raise InputError(f"fpr must be a number, got {fpr!r}")
    for rate, value in rows.items():
        if math.isclose(rate, fpr, rel_tol=1e-9):
            return float(value)
    listed = ", ".join(f"{rate:g}" for rate in rows)
    raise InputError(f"fpr={fpr!r} is not calibrated for this model; choose one of {listed}")


def section_of(manifest: Manifest) -> dict[str, Any]:
    """The manifest's ``ood`` section, refused when missing or of an unknown method."""
    section = manifest.section(SECTION)
    if section is None:
        raise ModelFormatError(
            f"{manifest.path}: no out-of-distribution calibration (no {SECTION!r} section); "
            f"add one with `vae-export ood {manifest.directory} --data-dir DIR`"
        )
    if not is_known(section):
        raise ModelFormatError(
            f"{manifest.path}: ood calibration method {section.get('method')!r} version "
            f"{section.get('version')!r} is not known to this vae-onnx (it computes {METHOD!r} "
            f"version {VERSION}); upgrade vae-onnx"
        )
    return section


# ---- calibration --------------------------------------------------------------------------


def calibrate(
    fit: Statistics,
    holdout: Statistics,
    *,
    fit_info: Mapping[str, Any],
    holdout_info: Mapping[str, Any],
    reference: Statistics | None = None,
    reference_info: Mapping[str, Any] | None = None,
    fprs: Sequence[float] = FPRS,
) -> dict[str, Any]:
    """The ``ood`` section from the statistics of in-distribution images.

    ``fit`` (training images) gives each statistic's 10th, 50th and 90th percentiles.
    ``holdout`` (in-distribution images the thresholds are honest on: ideally never seen
    in training) is split in two halves, in the order given: the threshold at each rate
    is the (1 - fpr) quantile of the first half's scores, and the rate is measured on the
    second half; rates with fewer than MIN_FALSE_POSITIVES expected in a half are left out.
    ``reference`` (images of another dataset, optional) gives the true-positive
    rate at each threshold. ``*_info``: where the images came from (recorded as given).
    """
    stats = {}
    for name in STATISTICS:
        p10, p50, p90 = np.percentile(np.asarray(fit[name], np.float64), [10, 50, 90])
        if not p10 < p50 < p90:
            raise InputError(f"ood calibration: {name} barely varies over the fit images")
        stats[name] = {
            "p10": float(p10),
            "p50": float(p50),
            "p90": float(p90),
            "definition": DEFINITIONS[name],
        }
    section: dict[str, Any] = {
        "method": METHOD,
        "version": VERSION,
        "score": SCORE,
        "statistics": stats,
    }
    held = score(holdout, section)
    chosen, measured = held[: len(held) // 2], held[len(held) // 2 :]
    # A rate is calibrated only where each half expects MIN_FALSE_POSITIVES images above it.
    rates = [fpr for fpr in sorted(fprs) if len(chosen) * fpr >= MIN_FALSE_POSITIVES]
    if not rates:
        need = 2 * math.ceil(MIN_FALSE_POSITIVES / max(fprs))
        raise InputError(
            f"ood calibration: {len(held)} held-out images are too few for any threshold "
            f"(fpr {max(fprs):g} needs {need}); hold out more (vae-train --val-size) or "
            "export with --no-ood"
        )
    outside = score(reference, section) if reference is not None else None
    rows = []
    for fpr in rates:
        t = float(np.quantile(chosen, 1.0 - fpr, method="higher"))
        row = {"fpr": fpr, "threshold": t, "measured_fpr": float(np.mean(measured > t))}
        if outside is not None:
            row["tpr"] = float(np.mean(outside > t))
        rows.append(row)
    section["thresholds"] = rows
    section["fit"] = dict(fit_info)
    section["holdout"] = {
        **holdout_info,
        "threshold_images": len(chosen),
        "measured_images": len(measured),
    }
    if outside is not None and reference_info is not None:
        section["reference"] = dict(reference_info)
    return section
