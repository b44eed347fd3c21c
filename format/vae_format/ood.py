"""The ``ood`` section of manifest.json: how a model's out-of-distribution score is
calibrated (docs/ood.md), and its check, standard library only.

Method ``excess-nelbo-typicality``, version 1. Per image, two statistics (nats):

- ``excess_nelbo``: the negative ELBO at z = mu minus the likelihood's floor (the smallest
  -log p(x|x_hat) any decoder output could reach on that image: the summed pixel entropy
  for the Bernoulli likelihood);
- ``pixel_entropy``: sum over pixels of h(x) = -x ln x - (1 - x) ln(1 - x), h(0) = h(1) = 0.

Each statistic is compared with the model's training images on both sides: its z-score is
``(value - p50) / (p90 - p50)`` above the median and ``(p50 - value) / (p50 - p10)`` below
it (p10, p50, p90: the training images' percentiles), and the score is the larger of the
two z-scores. ``thresholds`` give the
score above which an image is out of distribution at each false-positive rate, with the
rate measured on held-out in-distribution images. A section whose method or version this
package does not know is kept as it is (a later vae-onnx may have written it); the runtime
refuses to compute a score from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ModelFormatError

SECTION = "ood"
METHOD = "excess-nelbo-typicality"
VERSION = 1
STATISTICS = ("excess_nelbo", "pixel_entropy")
PERCENTILES = ("p10", "p50", "p90")  # recorded per statistic, of the training images
# The false-positive rates a calibration records thresholds for.
FPRS = (0.01, 0.02, 0.05, 0.1)
_SAMPLE_KEYS = ("fit", "holdout")


def is_known(section: Mapping[str, Any]) -> bool:
    """True when this package knows how to compute the section's score."""
    return section.get("method") == METHOD and section.get("version") == VERSION


def check_ood_section(section: Any, where: object) -> None:
    """Refuse a malformed ``ood`` section with one line naming ``where`` and the key."""
    problem = _problem(section)
    if problem:
        raise ModelFormatError(f"{where}: ood calibration: {problem}")


def _problem(section: Any) -> str | None:
    if not isinstance(section, dict):
        return f"must be an object, got {type(section).__name__}"
    if not isinstance(section.get("method"), str):
        return "method must be a string"
    if not _is_int(section.get("version")) or section["version"] < 1:
        return "version must be an integer >= 1"
    if not is_known(section):
        return None
    return (
        _statistics_problem(section.get("statistics"))
        or _thresholds_problem(section.get("thresholds"))
        or next(filter(None, (_sample_problem(section, key) for key in _SAMPLE_KEYS)), None)
        or _reference_problem(section.get("reference"))
    )


def _statistics_problem(stats: Any) -> str | None:
    if not isinstance(stats, dict) or sorted(stats) != sorted(STATISTICS):
        return f"statistics must be an object with exactly {', '.join(STATISTICS)}"
    for name in STATISTICS:
        entry = stats[name]
        if not isinstance(entry, dict):
            return f"statistics.{name} must be an object"
        for key in PERCENTILES:
            if not _is_finite(entry.get(key)):
                return f"statistics.{name}.{key} must be a finite number"
        if not entry["p10"] < entry["p50"] < entry["p90"]:
            return f"statistics.{name}: p10 < p50 < p90 must hold"
    return None


def _thresholds_problem(rows: Any) -> str | None:
    if not isinstance(rows, list) or not rows:
        return "thresholds must be a non-empty list"
    previous: dict[str, Any] | None = None
    for i, row in enumerate(rows):
        where = f"thresholds[{i}]"
        if not isinstance(row, dict):
            return f"{where} must be an object"
        if not (_is_finite(row.get("fpr")) and 0 < row["fpr"] < 1):
            return f"{where}.fpr must be a number in (0, 1)"
        if not (_is_finite(row.get("threshold")) and row["threshold"] >= 0):
            return f"{where}.threshold must be a finite number >= 0"
        for key in ("measured_fpr", "tpr"):
            if key in row and not (_is_finite(row[key]) and 0 <= row[key] <= 1):
                return f"{where}.{key} must be a number in [0, 1]"
        if "measured_fpr" not in row:
            return f"{where} lacks measured_fpr"
        if previous is not None:
            if row["fpr"] <= previous["fpr"]:
                return "thresholds must be listed by increasing fpr, each rate once"
            if row["threshold"] > previous["threshold"]:
                return f"{where}: a larger fpr cannot need a higher threshold"
        previous = row
    return None


def _sample_problem(section: Mapping[str, Any], key: str) -> str | None:
    sample = section.get(key)
    if not isinstance(sample, dict):
        return f"{key} must be an object"
    if not isinstance(sample.get("dataset"), str) or not isinstance(sample.get("split"), str):
        return f"{key}.dataset and {key}.split must be strings"
    if not _is_int(sample.get("images")) or sample["images"] < 1:
        return f"{key}.images must be an integer >= 1"
    if not isinstance(sample.get("seen_in_training"), bool):
        return f"{key}.seen_in_training must be true or false"
    return None


def _reference_problem(reference: Any) -> str | None:
    if reference is None:
        return None
    if not isinstance(reference, dict) or not isinstance(reference.get("dataset"), str):
        return "reference must be an object naming its dataset"
    if not _is_int(reference.get("images")) or reference["images"] < 1:
        return "reference.images must be an integer >= 1"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
