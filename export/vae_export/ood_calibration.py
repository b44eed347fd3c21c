"""The out-of-distribution calibration (docs/ood.md): the training images' statistics, run
through vae_runtime (no torch), written as the manifest's ``ood`` section.

Which images: the statistics' percentiles come from up to FIT_IMAGES images the model was
trained on; the thresholds and their measured false-positive rates come from the
validation split the run held out (``vae-train --val-size``), recomputed from the run's
seed, so no image the model saw sets a threshold. A run without a validation split (or
with fewer than MIN_VALIDATION images in it) falls back to its last HOLDOUT_IMAGES
training images, and the section says they were seen in training. The true-positive rates
use the other dataset's *training* images: the test sets stay for evaluation (``vae-export
ood`` refreshes the ``quality`` section's OOD-score figures, measured on them, when the
directory has been evaluated).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vae_export.builder import changed_model_dir
from vae_export.held_out import run_settings, split_indices, training_images
from vae_format.datasets import find_file, get_spec, read_split
from vae_format.ood import SECTION
from vae_runtime import VAE, ood
from vae_runtime.evaluate import ood_score_figures

FIT_IMAGES = 10_000
HOLDOUT_IMAGES = 5_000  # used only when the run held out no (or too small a) validation split
MIN_VALIDATION = 1_000  # smaller validation splits give too few false positives to count
REFERENCE_IMAGES = 5_000
REFERENCE = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def calibrate_ood(vae: VAE, settings: Mapping[str, Any], data_dir: str | Path) -> dict[str, Any]:
    """The ``ood`` section for ``vae``, trained on ``settings["dataset"]`` with the run's
    ``val_size``, ``seed`` and ``limit_train`` (as a checkpoint's config records them)."""
    dataset = settings.get("dataset") or "mnist"
    train = training_images(settings, data_dir)[0]
    fit_idx, holdout_idx, seen = _samples(len(train), settings)
    source = {"dataset": dataset, "split": "train"}
    fit_info = {
        **source,
        "images": len(fit_idx),
        "seen_in_training": True,
        "selection": "the first training images the model was trained on, file order",
    }
    holdout_info = {
        **source,
        "images": len(holdout_idx),
        "seen_in_training": seen,
        "selection": _holdout_selection(settings, seen),
    }
    reference, reference_info = None, None
    other = REFERENCE.get(dataset)
    if other and find_file(get_spec(other), "train-images", data_dir) is not None:
        images = read_split(other, "train", data_dir).images[:REFERENCE_IMAGES]
        reference = vae.ood_statistics(images)
        reference_info = {"dataset": other, "split": "train", "images": len(images)}
    return ood.calibrate(
        vae.ood_statistics(train[fit_idx]),
        vae.ood_statistics(train[holdout_idx]),
        fit_info=fit_info,
        holdout_info=holdout_info,
        reference=reference,
        reference_info=reference_info,
    )


def _samples(count: int, settings: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    """(fit indices, holdout indices, whether the holdout was seen in training)."""
    val_size = int(settings.get("val_size") or 0)
    if val_size >= MIN_VALIDATION:
        val_idx, train_idx = split_indices(count, settings)
        return train_idx[:FIT_IMAGES], val_idx, False
    held = min(HOLDOUT_IMAGES, count // 3)
    return list(range(min(FIT_IMAGES, count - held))), list(range(count - held, count)), True


def _holdout_selection(settings: Mapping[str, Any], seen: bool) -> str:
    if seen:
        return "the last training images, file order (no large enough validation split)"
    return (
        f"the validation split vae-train held out (--val-size {settings['val_size']} "
        f"--seed {settings['seed']}), file order"
    )


def add_ood_calibration(
    model_dir: str | Path, data_dir: str | Path, *, command: str = ""
) -> dict[str, Any]:
    """Calibrate an existing model directory and write its ``ood`` section (replacing any),
    through the builder: the directory changes whole or not at all."""
    with changed_model_dir(Path(model_dir)) as builder:
        manifest = builder.manifest
        settings = run_settings(manifest)
        section = calibrate_ood(builder.load(), settings, data_dir)
        section["command"] = command
        builder.set_section(SECTION, section)
        quality = manifest.section("quality")
        if quality and quality.get("ood_dataset"):
            builder.set_section("quality", _refreshed(quality, builder.load(), data_dir))
    return section


def _refreshed(quality: dict[str, Any], vae: VAE, data_dir: str | Path) -> dict[str, Any]:
    """The ``quality`` section with the OOD score's test-set figures of this calibration,
    on the test images the rest of it was measured on."""
    n = quality.get("test_images")
    inside = read_split(quality["dataset"], "test", data_dir).images[:n]
    outside = read_split(quality["ood_dataset"], "test", data_dir).images[:n]
    return {**quality, **ood_score_figures(vae, inside, outside)}
