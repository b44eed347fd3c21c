"""What export records about a model, built in this one place: the graphs' metadata_props
and the fields of a new directory's manifest (vae_format.Manifest checks and writes it;
the builder lists the files and variants)."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from vae_format.contract import graph_metadata as format_metadata
from vae_format.manifest import graph_entry, likelihood_section
from vae_format.preprocess_spec import BUILTIN, NONE, builtin

from .errors import ExportError

# --preprocess: the spec of the model's dataset (how its images were made), or "none".
PREPROCESS_CHOICES = ("dataset", NONE)

# The training settings a manifest repeats from the checkpoint's config.
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "seed",
    "val_size",
    "limit_train",
    "patience",
    "kl_warmup",
    "precision",
    "ema",
)


def likelihood_of(config: Mapping[str, Any]) -> dict[str, Any]:
    return likelihood_section(config.get("likelihood", "bernoulli"), config.get("sigma"))


def preprocess_of(config: Mapping[str, Any], choice: str = "dataset") -> dict[str, Any] | str:
    """The manifest's ``preprocess`` section: the procedure the training images were made
    with (docs/preprocessing.md), so raw images meet the model as its data did."""
    if choice == NONE:
        return NONE
    if choice != "dataset":
        raise ExportError(f"--preprocess must be one of {list(PREPROCESS_CHOICES)}, got {choice!r}")
    dataset = config.get("dataset")
    if dataset not in BUILTIN:
        raise ExportError(
            f"no preprocessing is known for the checkpoint's dataset {dataset!r} "
            f"(known: {sorted(BUILTIN)}); export with --preprocess none"
        )
    return builtin(dataset)


def graph_metadata(name: str, role: str, config: Mapping[str, Any]) -> dict[str, str]:
    """The metadata_props of a graph, so that a lone .onnx file says what it is."""
    return format_metadata(
        name=name,
        role=role,
        arch=str(config["arch"]),
        latent_dim=int(config["latent_dim"]),
        likelihood=likelihood_of(config)["name"],
        dataset=str(config.get("dataset", "unknown")),
    )


def own_version() -> str:
    try:
        return version("vae-onnx")
    except PackageNotFoundError:
        return "unknown"


def versions(opset: int) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
        "vae_onnx": own_version(),
        "python": platform.python_version(),
    }


def new_manifest_fields(
    name: str,
    config: Mapping[str, Any],
    graphs: Mapping[str, Mapping[str, Any]],
    opset: int,
    parity: dict[str, Any],
    export_info: dict[str, Any],
    preprocess: str = "dataset",
) -> dict[str, Any]:
    """The fields of ``Manifest.create`` for a new model directory but its ``files``.

    ``graphs``: role -> {"file", "external_data", and informational keys such as FLOPs}.
    """
    latent_dim = int(config["latent_dim"])
    return {
        "name": name,
        "arch": str(config["arch"]),
        "latent_dim": latent_dim,
        "likelihood": likelihood_of(config),
        "graphs": {role: graph_entry(role, latent_dim, **entry) for role, entry in graphs.items()},
        "preprocess": preprocess_of(config, preprocess),
        "dataset": {"name": config.get("dataset"), "files": config.get("dataset_files", {})},
        "training": {
            "command": config.get("command", ""),
            "epoch": config.get("epoch"),
            "settings": {k: config.get(k) for k in TRAIN_KEYS},
            "metrics": config.get("metrics", {}),
            "parameters": config.get("parameters", {}),
        },
        "export": export_info,
        "versions": versions(opset),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "parity": parity,
    }
