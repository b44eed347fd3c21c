"""The shipped models: names, sizes, quality figures and variants, read from their
manifests (``vae-run models``). Loading one by name is :func:`resolve_model_dir`'s work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_format.manifest import Manifest

from .errors import ModelFormatError
from .model_dir import DEFAULT_MODEL_NAME, shipped_models

QUALITY_KEYS = ("test_nelbo", "test_iw_bound", "iw_k", "knn_accuracy", "ood_auroc", "ood_dataset")


def describe_model(directory: Path) -> dict[str, Any]:
    """A model's facts from its manifest: what it is, its size on disk (every listed file)
    and per variant (the graphs and the weights they read), and its quality figures."""
    m = Manifest.load(directory)
    variants = {"default": None, **dict.fromkeys(sorted(m.variants))}
    sizes = {}
    for variant in variants:
        name = None if variant == "default" else variant
        graphs = m.graph_files(name)
        files = set(graphs.values())
        for role in graphs:
            files.update(m.external_files(role, name))
        sizes[variant] = sum(m.files[f].bytes for f in files)
    quality = m.raw.get("quality", {})
    return {
        "name": m.name,
        "arch": m.arch,
        "latent_dim": m.latent_dim,
        "dataset": m.raw.get("dataset", {}).get("name"),
        "default": directory.name == DEFAULT_MODEL_NAME,
        "bytes": sum(entry.bytes for entry in m.files.values()),
        "variant_bytes": sizes,
        "variants": sorted(m.variants),
        "quality": {k: quality[k] for k in QUALITY_KEYS if k in quality},
        "directory": str(directory),
    }


def list_models() -> list[dict[str, Any]]:
    """Every shipped model, by name; a damaged one is listed with its error."""
    out = []
    for name, directory in sorted(shipped_models().items()):
        try:
            out.append(describe_model(directory))
        except ModelFormatError as exc:
            out.append({"name": name, "directory": str(directory), "error": str(exc)})
    return out
