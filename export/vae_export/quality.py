"""The manifest's ``quality`` section: the torch-free evaluator's test figures (negative
ELBO, IW bound, 5-NN, OOD AUROC) and, for a run that held a validation split out, the same
ELBO and 5-NN on it (held_out.py). Written by ``vae-export RUN --evaluate K``, or refreshed
on an existing directory by ``vae-export evaluate``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vae_export.builder import changed_model_dir
from vae_export.errors import ExportError
from vae_export.held_out import run_settings, validation_quality
from vae_export.ood_calibration import REFERENCE
from vae_runtime import VAE
from vae_runtime.errors import VAEError
from vae_runtime.evaluate import evaluate

SECTION = "quality"


def quality(vae: VAE, settings: Mapping[str, Any], data_dir: str | Path, k: int) -> dict[str, Any]:
    """The section for ``vae``, trained with ``settings`` (a checkpoint's config)."""
    dataset = settings.get("dataset") or "mnist"
    ood = REFERENCE.get(dataset)  # the other dataset, as in the OOD calibration
    try:
        result = evaluate(vae, data_dir, dataset, k=k, seed=0, neighbours=5, ood_dataset=ood)
        validation = validation_quality(vae, settings, data_dir)
    except VAEError as exc:
        raise ExportError(f"evaluation failed: {exc}") from None
    if validation is not None:
        result["validation"] = validation
    return {"evaluator": "vae-run evaluate", **result}


def add_quality(model_dir: str | Path, data_dir: str | Path, k: int) -> dict[str, Any]:
    """Evaluate an existing model directory and write its ``quality`` section (replacing
    any), through the builder: the directory changes whole or not at all."""
    with changed_model_dir(Path(model_dir)) as builder:
        section = quality(builder.load(), run_settings(builder.manifest), data_dir, k)
        builder.set_section(SECTION, section)
    return section
