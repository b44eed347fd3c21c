"""The validation split a training run held out (``vae-train --val-size``), found again
from the settings its checkpoint records, and the figures measured on it.

A recipe is chosen by these figures, never by the test set's: export records them in the
manifest's ``quality`` section beside the test figures, so the choice can be checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vae_export.errors import ExportError
from vae_format.datasets import read_split, validation_split
from vae_format.manifest import Manifest
from vae_runtime import VAE
from vae_runtime.evaluate import held_out_figures


def run_settings(manifest: Manifest) -> dict[str, Any]:
    """A model directory's training settings, with its dataset's name, as a checkpoint's
    config records them."""
    return {
        **(manifest.section("training") or {}).get("settings", {}),
        "dataset": (manifest.section("dataset") or {}).get("name"),
    }


def training_images(settings: Mapping[str, Any], data_dir: str | Path) -> tuple[Any, Any]:
    """(images, labels) of the training split as the run read it (``limit_train`` applied)."""
    dataset = settings.get("dataset") or "mnist"
    loaded = read_split(dataset, "train", data_dir)
    limit = settings.get("limit_train")
    return loaded.images[:limit], loaded.labels[:limit]


def split_indices(count: int, settings: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training indices) of the run's split of ``count`` images."""
    if "seed" not in settings:
        raise ExportError("the run's seed is not recorded: cannot find its validation split")
    return validation_split(count, int(settings.get("val_size") or 0), int(settings["seed"]))


def validation_quality(
    vae: VAE, settings: Mapping[str, Any], data_dir: str | Path, neighbours: int = 5
) -> dict[str, Any] | None:
    """Negative ELBO and k-NN accuracy on the run's validation images, the images it trained
    on as the k-NN index (so no query finds itself); None when it held none out."""
    if not int(settings.get("val_size") or 0):
        return None
    images, labels = training_images(settings, data_dir)
    val_idx, train_idx = split_indices(len(images), settings)
    figures = held_out_figures(
        vae,
        images[val_idx],
        labels[val_idx],
        images[train_idx],
        labels[train_idx],
        neighbours=neighbours,
    )
    selection = f"--val-size {settings['val_size']} --seed {settings['seed']}"
    return {"split": f"the validation split vae-train held out ({selection})", **figures}
