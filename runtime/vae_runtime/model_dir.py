"""Finding, reading and checking a model directory (docs/model-format.md, format version 1).

Everything that can be checked without ONNX Runtime is checked here: the manifest's keys and
types, that every path stays inside the directory, that the graphs' declared signatures
agree with the contract and with each other, and the size and sha256 of each graph file.
The checks on the loaded graphs themselves (names, shapes, dtypes, metadata_props) are in
:func:`check_session`. Each refusal is a :class:`ModelFormatError` naming file and reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import ModelFormatError

FORMAT = "vae-onnx-model"
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
DEFAULT_MODEL_NAME = "mnist-conv-z20"
ENV_MODEL = "VAE_ONNX_MODEL"
IMAGE_SHAPE = (1, 28, 28)
ROLES = ("graph", "checkpoint", "config", "log")
LIKELIHOODS = ("bernoulli", "gaussian")
META_PREFIX = "vae_onnx."

# Where the default model is looked for, after $VAE_ONNX_MODEL: inside the installed package
# (the wheel copies it there), then in the source checkout (editable installs).
PACKAGED_MODEL = Path(__file__).resolve().parent / "default_model"
REPO_MODEL = Path(__file__).resolve().parents[2] / "artifacts" / DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class GraphSpec:
    """One graph's contract: ordered input and output names with their shapes (None = N)."""

    role: str
    inputs: tuple[tuple[str, tuple[int | None, ...]], ...]
    outputs: tuple[tuple[str, tuple[int | None, ...]], ...]


def contract(role: str, latent_dim: int) -> GraphSpec:
    """The signature docs/model-format.md prescribes for ``role`` at latent size L."""
    image = (None, *IMAGE_SHAPE)
    latent = (None, latent_dim)
    if role == "encoder":
        return GraphSpec(role, (("x", image),), (("mu", latent), ("logvar", latent)))
    return GraphSpec(role, (("z", latent),), (("x_hat", image),))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int
    role: str


@dataclass(frozen=True)
class Manifest:
    """A checked manifest.json. ``raw`` keeps every key, informational ones included."""

    directory: Path
    format_version: int
    name: str
    arch: str
    latent_dim: int
    likelihood: str
    sigma: float | None
    graphs: Mapping[str, str]  # role -> relative file of the default variant
    files: Mapping[str, FileEntry]
    variants: Mapping[str, Mapping[str, str]]  # variant -> role -> relative file
    raw: Mapping[str, Any]
    # role -> files the default graph reads its external-data weights from (the checkpoints)
    external: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def external_files(self, role: str, variant: str | None = None) -> tuple[str, ...]:
        """Files whose bytes ``role``'s graph needs as external data.

        A variant's own graphs are self-contained; a variant may also reuse a default graph
        (the fp16 variant keeps the fp32 encoder), which then reads what it always reads.
        """
        if variant is not None and self.graph_files(variant)[role] != self.graphs[role]:
            return ()
        return tuple(self.external.get(role, ()))

    def graph_files(self, variant: str | None = None) -> dict[str, str]:
        """role -> relative file of ``variant`` (None: the graphs listed under ``graphs``)."""
        if variant is None:
            return dict(self.graphs)
        if variant not in self.variants:
            known = ", ".join(sorted(self.variants)) or "none"
            raise ModelFormatError(
                f"{self.directory / MANIFEST}: no variant {variant!r} (variants: {known})"
            )
        return dict(self.variants[variant])


def resolve_model_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The model directory to load: ``path``; else $VAE_ONNX_MODEL; else the default model.

    A path to a manifest.json file stands for its folder.
    """
    if path is None:
        env = os.environ.get(ENV_MODEL)
        if env:
            path = env
        else:
            for candidate in (PACKAGED_MODEL, REPO_MODEL):
                if (candidate / MANIFEST).is_file():
                    return candidate
            raise ModelFormatError(
                f"no default model found: ${ENV_MODEL} is not set and neither {PACKAGED_MODEL} "
                f"nor {REPO_MODEL} holds a {MANIFEST}; pass the model directory explicitly"
            )
    try:
        directory = Path(path)
    except TypeError:
        raise ModelFormatError(f"model path must be a str or os.PathLike, got {path!r}") from None
    if directory.name == MANIFEST and directory.is_file():
        directory = directory.parent
    if not directory.is_dir():
        raise ModelFormatError(f"{directory}: model directory does not exist")
    return directory


def _fail(where: Path | str, reason: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {reason}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in obj:
        raise _fail(where, f"missing required key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise _fail(where, f"key {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", str: "a string", int: "an integer", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def check_relative_path(rel: Any, where: Path) -> str:
    """``rel`` as a normalised POSIX path, refusing anything that could leave the directory."""
    if not isinstance(rel, str) or not rel:
        raise _fail(where, f"file path must be a non-empty string, got {rel!r}")
    if "\\" in rel or "\x00" in rel:
        raise _fail(where, f"file path {rel!r} must use '/' and hold no backslash or NUL")
    posix = PurePosixPath(rel)
    if posix.is_absolute() or PureWindowsPath(rel).drive:
        raise _fail(where, f"file path {rel!r} is absolute; paths must be relative")
    if ".." in posix.parts:
        raise _fail(where, f"file path {rel!r} contains '..'; paths must stay inside")
    normal = str(posix)
    if normal in ("", "."):
        raise _fail(where, f"file path {rel!r} names the directory itself")
    return normal


def _shape(value: Any, where: Path, what: str) -> tuple[int | None, ...]:
    if not isinstance(value, list) or not all(v is None or _is_int(v) for v in value):
        raise _fail(where, f"{what}: shape must be a list of integers or null, got {value!r}")
    return tuple(value)


def _check_declared(graph: Mapping[str, Any], spec: GraphSpec, where: Path) -> None:
    """The manifest's own description of a graph must match the contract."""
    for side, want in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        declared = _require(graph, side, dict, where)
        if set(declared) != {name for name, _ in want}:
            raise _fail(
                where,
                f"graphs.{spec.role}.{side} are {sorted(declared)}, "
                f"expected {[name for name, _ in want]}",
            )
        for name, shape in want:
            got = _shape(declared[name], where, f"graphs.{spec.role}.{side}.{name}")
            if got != shape:
                raise _fail(
                    where,
                    f"graphs.{spec.role}.{side}.{name} has shape {_fmt(got)}, "
                    f"expected {_fmt(shape)}",
                )


def _declared_latent(graph: Mapping[str, Any], side: str, name: str) -> Any:
    shape = graph.get(side, {}).get(name) if isinstance(graph.get(side), dict) else None
    return shape[1] if isinstance(shape, list) and len(shape) == 2 else None


def _fmt(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("N" if d is None or isinstance(d, str) else str(d) for d in shape) + "]"


def load_manifest(directory: Path) -> Manifest:
    """Read and check ``directory/manifest.json`` (no graph is opened here)."""
    where = directory / MANIFEST
    try:
        text = where.read_bytes().decode("utf-8")
        raw = json.loads(text)
    except FileNotFoundError:
        raise _fail(where, "missing; not a model directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(where, f"not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _fail(where, f"must hold a JSON object, got {type(raw).__name__}")

    fmt = _require(raw, "format", str, where)
    if fmt != FORMAT:
        raise _fail(where, f"format is {fmt!r}, expected {FORMAT!r}")
    version = _require(raw, "format_version", int, where)
    if version not in SUPPORTED_VERSIONS:
        raise _fail(
            where,
            f"format_version {version} is not supported by this runtime "
            f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade vae-onnx",
        )
    name = _require(raw, "name", str, where)
    arch = _require(raw, "arch", str, where)
    latent_dim = _require(raw, "latent_dim", int, where)
    if latent_dim < 1:
        raise _fail(where, f"latent_dim must be >= 1, got {latent_dim}")

    image = _require(raw, "image", dict, where)
    if image.get("shape") != list(IMAGE_SHAPE) or image.get("dtype") != "float32":
        raise _fail(
            where,
            f"image must have shape {list(IMAGE_SHAPE)} and dtype float32, "
            f"got shape {image.get('shape')!r} dtype {image.get('dtype')!r}",
        )

    lik = _require(raw, "likelihood", dict, where)
    lik_name = lik.get("name")
    if lik_name not in LIKELIHOODS:
        raise _fail(where, f"likelihood.name is {lik_name!r}, expected one of {LIKELIHOODS}")
    sigma = None
    if lik_name == "gaussian":
        sigma = lik.get("sigma")
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool):
            raise _fail(where, f"likelihood.sigma must be a number, got {sigma!r}")
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise _fail(where, f"likelihood.sigma must be finite and > 0, got {sigma!r}")

    files: dict[str, FileEntry] = {}
    for rel, entry in _require(raw, "files", dict, where).items():
        rel = check_relative_path(rel, where)
        if not isinstance(entry, dict):
            raise _fail(where, f"files[{rel!r}] must be an object")
        sha = entry.get("sha256")
        size = entry.get("bytes")
        role = entry.get("role")
        if not isinstance(sha, str) or len(sha) != 64 or not _is_hex(sha):
            raise _fail(where, f"files[{rel!r}].sha256 must be 64 hex digits, got {sha!r}")
        if not _is_int(size) or size < 0:
            raise _fail(where, f"files[{rel!r}].bytes must be an integer >= 0, got {size!r}")
        if role not in ROLES:
            raise _fail(where, f"files[{rel!r}].role is {role!r}, expected one of {ROLES}")
        files[rel] = FileEntry(sha.lower(), size, role)

    graphs_obj = _require(raw, "graphs", dict, where)
    graphs: dict[str, str] = {}
    for role in ("encoder", "decoder"):
        if not isinstance(graphs_obj.get(role), dict):
            raise _fail(where, f"graphs.{role} is missing or not an object")
        graphs[role] = _graph_file(
            graphs_obj[role].get("file"), files, where, f"graphs.{role}.file"
        )
    external: dict[str, tuple[str, ...]] = {}
    for role in ("encoder", "decoder"):
        listed = graphs_obj[role].get("external_data", [])
        what = f"graphs.{role}.external_data"
        if not isinstance(listed, list):
            raise _fail(where, f"{what} must be a list of files")
        external[role] = tuple(_listed_file(rel, files, where, what) for rel in listed)
    # Said first and in these words, because it is the mistake a hand-edited manifest makes.
    enc_l = _declared_latent(graphs_obj["encoder"], "outputs", "mu")
    dec_l = _declared_latent(graphs_obj["decoder"], "inputs", "z")
    if enc_l is not None and dec_l is not None and enc_l != dec_l:
        raise _fail(where, f"latent size mismatch: encoder produces {enc_l}, decoder takes {dec_l}")
    for role in ("encoder", "decoder"):
        _check_declared(graphs_obj[role], contract(role, latent_dim), where)

    variants: dict[str, dict[str, str]] = {}
    raw_variants = raw.get("variants", {})
    if not isinstance(raw_variants, dict):
        raise _fail(where, "variants must be an object")
    for vname, vobj in raw_variants.items():
        if not isinstance(vobj, dict):
            raise _fail(where, f"variants[{vname!r}] must be an object")
        variants[vname] = {
            role: _graph_file(vobj.get(role), files, where, f"variants[{vname!r}].{role}")
            for role in ("encoder", "decoder")
        }

    return Manifest(
        directory=directory,
        format_version=version,
        name=name,
        arch=arch,
        latent_dim=latent_dim,
        likelihood=lik_name,
        sigma=sigma,
        graphs=graphs,
        files=files,
        variants=variants,
        raw=raw,
        external=external,
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _listed_file(rel: Any, files: Mapping[str, FileEntry], where: Path, what: str) -> str:
    rel = check_relative_path(rel, where)
    if rel not in files:
        raise _fail(
            where, f"{what} names {rel!r}, which is not listed under 'files' (no sha256 to check)"
        )
    return rel


def _graph_file(rel: Any, files: Mapping[str, FileEntry], where: Path, what: str) -> str:
    if rel is None:
        raise _fail(where, f"{what} is missing")
    rel = _listed_file(rel, files, where, what)
    if files[rel].role != "graph":
        raise _fail(where, f"{what} {rel!r} has role {files[rel].role!r}, expected 'graph'")
    return rel


def read_verified(manifest: Manifest, rel: str) -> bytes:
    """The bytes of file ``rel`` once its location, size and sha256 are checked.

    The bytes are handed to ONNX Runtime as they are, so the file cannot change between
    the check and the load.
    """
    entry = manifest.files[rel]
    root = manifest.directory.resolve()
    path = manifest.directory / rel
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
        raise _fail(path, f"cannot resolve ({exc})") from None
    if not real.is_relative_to(root):
        raise _fail(path, f"resolves to {real}, outside the model directory (symlink?)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "missing (listed in manifest.json)") from None
    except OSError as exc:
        raise _fail(path, f"not readable ({exc.strerror or exc})") from None
    if len(data) != entry.bytes:
        raise _fail(
            path,
            f"size is {len(data)} bytes, manifest.json says {entry.bytes} (truncated or modified)",
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise _fail(
            path,
            f"sha256 {digest} does not match manifest.json ({entry.sha256}); "
            "the file was modified or corrupted",
        )
    return data


def check_session(session: Any, spec: GraphSpec, manifest: Manifest, path: Path) -> None:
    """The loaded graph's signature and metadata_props must match the contract and manifest.

    ``session`` is an onnxruntime.InferenceSession (typed loosely to keep ORT out of here).
    """
    for side, got, want in (
        ("input", session.get_inputs(), spec.inputs),
        ("output", session.get_outputs(), spec.outputs),
    ):
        got_names = [arg.name for arg in got]
        if sorted(got_names) != sorted(name for name, _ in want):
            raise _fail(
                path,
                f"{spec.role} {side}s are {got_names}, expected {[n for n, _ in want]}",
            )
        by_name = {arg.name: arg for arg in got}
        for name, shape in want:
            arg = by_name[name]
            if arg.type != "tensor(float)":
                raise _fail(path, f"{side} {name!r} has type {arg.type}, expected tensor(float)")
            dims = tuple(arg.shape) if arg.shape is not None else ()
            if len(dims) != len(shape):
                raise _fail(
                    path,
                    f"{side} {name!r} has rank {len(dims)} {_fmt(dims)}, "
                    f"expected rank {len(shape)} {_fmt(shape)}",
                )
            if _is_int(dims[0]):
                raise _fail(
                    path, f"{side} {name!r} has a fixed batch size {dims[0]}; N must be dynamic"
                )
            if any(g != w for g, w in zip(dims[1:], shape[1:], strict=True)):
                hint = ""
                if len(shape) == 2:
                    hint = f" (latent size {dims[1]} != manifest latent_dim {shape[1]})"
                raise _fail(
                    path,
                    f"{side} {name!r} has shape {_fmt(dims)}, expected {_fmt(shape)}{hint}",
                )

    meta = dict(session.get_modelmeta().custom_metadata_map)
    expected = {
        "format_version": str(manifest.format_version),
        "role": spec.role,
        "latent_dim": str(manifest.latent_dim),
    }
    for key, want in expected.items():
        got_value = meta.get(META_PREFIX + key)
        if got_value is None:
            raise _fail(path, f"metadata_props lacks {META_PREFIX + key}")
        if got_value.strip() != want:
            raise _fail(
                path,
                f"metadata_props {META_PREFIX + key} is {got_value!r}, "
                f"manifest.json implies {want!r}",
            )
    # Descriptive keys are compared only when present (quantizers may drop them).
    for key, want in (("arch", manifest.arch), ("likelihood", manifest.likelihood)):
        got_value = meta.get(META_PREFIX + key)
        if got_value is not None and got_value != want:
            raise _fail(
                path, f"metadata_props {META_PREFIX + key} is {got_value!r}, manifest says {want!r}"
            )
