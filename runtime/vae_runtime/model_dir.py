"""Which model directory to load, and whether a loaded graph keeps the format's contract.

Reading and checking manifest.json and the files it lists is vae_format's work
(:class:`vae_format.Manifest`, :func:`vae_format.read_verified`). Here: the default-model
search, and the check of a graph an engine has loaded (names, shapes, dtypes,
metadata_props) against the contract and the manifest. Each refusal is a
:class:`ModelFormatError` naming file and reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from vae_format.atomic_dir import recover
from vae_format.contract import (
    DESCRIPTIVE_METADATA,
    MANIFEST_FILE,
    META_PREFIX,
    REQUIRED_METADATA,
    GraphSpec,
    TensorSpec,
    format_shape,
    onnx_type,
)
from vae_format.manifest import Manifest

from .engines.base import GraphRunner, TensorInfo
from .errors import ModelFormatError
from .names import display_name

DEFAULT_MODEL_NAME = "mnist-conv-z20"
ENV_MODEL = "VAE_ONNX_MODEL"

# Where shipped models are looked for by name: inside the installed package (the wheel
# copies every artifacts/<name>/ there), then in the source checkout (editable installs).
PACKAGED_MODELS = Path(__file__).resolve().parent / "models"
REPO_MODELS = Path(__file__).resolve().parents[2] / "artifacts"
PACKAGED_MODEL = PACKAGED_MODELS / DEFAULT_MODEL_NAME
REPO_MODEL = REPO_MODELS / DEFAULT_MODEL_NAME


def model_roots() -> list[Path]:
    """The folders holding shipped models, in search order."""
    return [PACKAGED_MODELS, REPO_MODELS]


def shipped_model(name: str) -> Path | None:
    """The directory of the shipped model ``name``, or None. A plain name only (no
    separators, no leading dot), so a name can never reach outside the model folders."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    for root in model_roots():
        if (root / name / MANIFEST_FILE).is_file():
            return root / name
    return None


def resolve_model_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The model directory to load: ``path`` (a directory, its manifest.json, or the name
    of a shipped model such as "mnist-mlp-z20"); else $VAE_ONNX_MODEL; else the default
    model. An existing directory wins over a shipped model of the same name.
    """
    if path is None:
        env = os.environ.get(ENV_MODEL)
        if env:
            path = env
        else:
            for candidate in (PACKAGED_MODEL, REPO_MODEL):
                if (candidate / MANIFEST_FILE).is_file():
                    return candidate
            raise ModelFormatError(
                f"no default model found: ${ENV_MODEL} is not set and neither {PACKAGED_MODEL} "
                f"nor {REPO_MODEL} holds a {MANIFEST_FILE}; pass the model directory explicitly"
            )
    try:
        directory = Path(path)
    except TypeError:
        raise ModelFormatError(f"model path must be a str or os.PathLike, got {path!r}") from None
    if directory.name == MANIFEST_FILE and directory.is_file():
        directory = directory.parent
    if not directory.exists():
        recover(directory)  # an export's swap that a crash cut in half is finished first
    if not directory.is_dir():
        shipped = shipped_model(os.fspath(path))
        if shipped is not None:
            return shipped
        names = ", ".join(sorted(shipped_models())) or "none found"
        raise ModelFormatError(
            f"{display_name(directory)}: model directory does not exist (shipped models: {names})"
        )
    return directory


def shipped_models() -> dict[str, Path]:
    """Every shipped model by name (the packaged copy first)."""
    found: dict[str, Path] = {}
    for root in model_roots():
        if root.is_dir():
            for manifest in sorted(root.glob(f"*/{MANIFEST_FILE}")):
                found.setdefault(manifest.parent.name, manifest.parent)
    return found


def check_graph(runner: GraphRunner, spec: GraphSpec, manifest: Manifest, path: Path) -> None:
    """The loaded graph's signature and metadata_props must match the contract and manifest."""
    for side, got, want in (
        ("input", runner.inputs, spec.inputs),
        ("output", runner.outputs, spec.outputs),
    ):
        got_names = [t.name for t in got]
        if sorted(got_names) != sorted(t.name for t in want):
            raise ModelFormatError(
                f"{path}: {spec.role} {side}s are {got_names}, expected {[t.name for t in want]}"
            )
        by_name = {t.name: t for t in got}
        for tensor in want:
            _check_tensor(by_name[tensor.name], tensor, side, path)
    _check_metadata(runner, spec, manifest, path)


def _check_tensor(got: TensorInfo, want: TensorSpec, side: str, path: Path) -> None:
    name = want.name
    if got.dtype != want.dtype:
        raise ModelFormatError(
            f"{path}: {side} {name!r} has type {onnx_type(got.dtype)}, "
            f"expected {onnx_type(want.dtype)}"
        )
    dims = got.shape or ()
    if len(dims) != len(want.shape):
        raise ModelFormatError(
            f"{path}: {side} {name!r} has rank {len(dims)} {format_shape(dims)}, "
            f"expected rank {len(want.shape)} {format_shape(want.shape)}"
        )
    if isinstance(dims[0], int):
        raise ModelFormatError(
            f"{path}: {side} {name!r} has a fixed batch size {dims[0]}; N must be dynamic"
        )
    if any(g != w for g, w in zip(dims[1:], want.shape[1:], strict=True)):
        hint = ""
        if len(want.shape) == 2:
            hint = f" (latent size {dims[1]} != manifest latent_dim {want.shape[1]})"
        raise ModelFormatError(
            f"{path}: {side} {name!r} has shape {format_shape(dims)}, "
            f"expected {format_shape(want.shape)}{hint}"
        )


def _check_metadata(runner: GraphRunner, spec: GraphSpec, manifest: Manifest, path: Path) -> None:
    meta = runner.metadata
    implied = {
        "format_version": str(manifest.format_version),
        "role": spec.role,
        "latent_dim": str(manifest.latent_dim),
    }
    for key in REQUIRED_METADATA:
        want = implied[key]
        got = meta.get(META_PREFIX + key)
        if got is None:
            raise ModelFormatError(f"{path}: metadata_props lacks {META_PREFIX + key}")
        if got.strip() != want:
            raise ModelFormatError(
                f"{path}: metadata_props {META_PREFIX + key} is {got!r}, "
                f"manifest.json implies {want!r}"
            )
    # Descriptive keys are compared only when present (quantizers may drop them).
    descriptive = {"arch": manifest.arch, "likelihood": manifest.likelihood}
    for key in DESCRIPTIVE_METADATA:
        got = meta.get(META_PREFIX + key)
        if got is not None and got != descriptive[key]:
            raise ModelFormatError(
                f"{path}: metadata_props {META_PREFIX + key} is {got!r}, "
                f"manifest says {descriptive[key]!r}"
            )
