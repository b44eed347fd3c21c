"""The manifest and graph metadata of format version 1 (docs/model-format.md): the one place
where export builds them. Files and variants are listed by the builder (builder.py)."""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vae_export.errors import ExportError

FORMAT = "vae-onnx-model"
FORMAT_VERSION = 1
INPUT_CONVENTION = "float32 in [0,1], white digit on black"
IMAGE = {
    "shape": [1, 28, 28],
    "dtype": "float32",
    "range": [0, 1],
    "convention": "white digit on black background",
}
# The training settings a manifest repeats from the checkpoint's config.
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "seed",
    "val_size",
    "patience",
    "kl_warmup",
    "precision",
    "ema",
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(root: Path, rel: str, role: str) -> dict[str, Any]:
    path = root / rel
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role}


def read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path.parent} is not a model directory (no {path.name})") from None
    except ValueError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}") from None


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def likelihood_of(config: dict[str, Any]) -> dict[str, Any]:
    name = config.get("likelihood", "bernoulli")
    return {"name": "gaussian", "sigma": config["sigma"]} if name == "gaussian" else {"name": name}


def graph_metadata(name: str, role: str, config: dict[str, Any]) -> dict[str, str]:
    return {
        "vae_onnx.format_version": str(FORMAT_VERSION),
        "vae_onnx.role": role,
        "vae_onnx.name": name,
        "vae_onnx.arch": str(config["arch"]),
        "vae_onnx.latent_dim": str(config["latent_dim"]),
        "vae_onnx.likelihood": likelihood_of(config)["name"],
        "vae_onnx.dataset": str(config.get("dataset", "unknown")),
        "vae_onnx.input_convention": INPUT_CONVENTION,
    }


def graphs_section(latent_dim: int) -> dict[str, Any]:
    image, latent = [None, 1, 28, 28], [None, latent_dim]
    return {
        "encoder": {
            "file": "encoder.onnx",
            "inputs": {"x": image},
            "outputs": {"mu": latent, "logvar": latent},
        },
        "decoder": {"file": "decoder.onnx", "inputs": {"z": latent}, "outputs": {"x_hat": image}},
    }


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


def build_manifest(
    name: str,
    config: dict[str, Any],
    opset: int,
    parity: dict[str, Any],
    export_info: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a new model directory; the builder adds its ``files``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "arch": config["arch"],
        "latent_dim": int(config["latent_dim"]),
        "image": IMAGE,
        "likelihood": likelihood_of(config),
        "graphs": graphs_section(int(config["latent_dim"])),
        "files": {},
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
