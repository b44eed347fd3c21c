"""manifest.json, read with every check format versions 1 and 2 ask for, and written.

:meth:`Manifest.load` reads and checks a directory's manifest; each refusal is a
:class:`ModelFormatError` naming the file and the reason. No graph is opened here: the
graphs' own signatures are an engine's business (vae_runtime checks them on load).

Writing goes through the same checks: :meth:`Manifest.create` and the ``with_*`` methods
build a new document and check it as a reader would, so a manifest that export writes is
one the runtime accepts. Keys this module does not know (informational sections such as
``training`` or ``quality``, or sections a later format adds) are kept as they are in
``raw``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from . import strict_json
from .atomic import write_bytes
from .contract import (
    FILE_ROLES,
    FORMAT,
    FORMAT_VERSION,
    GRAPH_ROLES,
    IMAGE,
    IMAGE_DTYPE,
    IMAGE_SHAPE,
    LIKELIHOODS,
    MANIFEST_FILE,
    MAX_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    OPTIMIZATION_LEVELS,
    PREPROCESS_SINCE,
    SESSION_KEYS,
    SUPPORTED_VERSIONS,
    GraphSpec,
    contract,
    format_shape,
)
from .errors import ModelFormatError
from .ood import SECTION as OOD_SECTION
from .ood import check_ood_section
from .preprocess_spec import SECTION as PREPROCESS_SECTION
from .preprocess_spec import SpecError, validate
from .regular_file import read_regular_file

# The keys a reader requires, in the order a written manifest lists them.
REQUIRED_KEYS = (
    "format",
    "format_version",
    "name",
    "arch",
    "latent_dim",
    "image",
    "likelihood",
    "graphs",
    "files",
)


@dataclass(frozen=True)
class FileEntry:
    """A file's line under ``files``: what its bytes must hash to, and what it is for."""

    sha256: str
    bytes: int
    role: str

    @classmethod
    def of_bytes(cls, data: bytes, role: str) -> FileEntry:
        return cls(hashlib.sha256(data).hexdigest(), len(data), role)

    @classmethod
    def of_file(cls, path: str | os.PathLike[str], role: str) -> FileEntry:
        """The entry for the file at ``path`` (hashed in blocks, not read whole)."""
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        return cls(digest.hexdigest(), size, role)

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes, "role": self.role}


def graph_entry(
    role: str, latent_dim: int, file: str, external_data: Iterable[str] = (), **info: Any
) -> dict[str, Any]:
    """One ``graphs.<role>`` section: the file, the contract's tensors, its external data
    and any informational keys (e.g. ``flops_per_image``)."""
    return {
        "file": file,
        **contract(role, latent_dim).declared(),
        "external_data": sorted(external_data),
        **info,
    }


def likelihood_section(name: str, sigma: float | None = None) -> dict[str, Any]:
    """The ``likelihood`` section: sigma only for the Gaussian."""
    return {"name": name, "sigma": sigma} if name == "gaussian" else {"name": name}


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
    # variant -> its checked ``session`` entry (ONNX Runtime settings its graphs need)
    sessions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # How raw images become inputs (vae_format.preprocess_spec); None: "none", i.e. the
    # whole image fitted into 28x28 (format version 1 directories, or declared so).
    preprocess: Mapping[str, Any] | None = None

    # ---- reading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        """Read and check ``directory/manifest.json``."""
        directory = Path(directory)
        where = directory / MANIFEST_FILE
        try:
            raw = strict_json.loads(read_regular_file(where, MAX_MANIFEST_BYTES, at_most=True))
        except FileNotFoundError:
            raise _fail(where, "missing; not a model directory") from None
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, StrictJSONError, ...
            if isinstance(exc, ModelFormatError):
                raise
            raise _fail(where, f"not readable JSON ({exc})") from None
        return cls.from_dict(raw, directory)

    @classmethod
    def from_dict(cls, raw: Any, directory: str | os.PathLike[str]) -> Manifest:
        """Check a manifest document that belongs in ``directory`` (named in refusals)."""
        directory = Path(directory)
        where = directory / MANIFEST_FILE
        if not isinstance(raw, dict):
            raise _fail(where, f"must hold a JSON object, got {type(raw).__name__}")
        version, name, arch = _check_header(raw, where)
        latent_dim = _require(raw, "latent_dim", int, where)
        if latent_dim < 1:
            raise _fail(where, f"latent_dim must be >= 1, got {latent_dim}")
        _check_image(_require(raw, "image", dict, where), where)
        likelihood, sigma = _check_likelihood(_require(raw, "likelihood", dict, where), where)
        files = _check_files(_require(raw, "files", dict, where), where)
        section = _require(raw, "graphs", dict, where)
        graphs, external = _check_graphs(section, files, latent_dim, where)
        if OOD_SECTION in raw:
            check_ood_section(raw[OOD_SECTION], where)
        preprocess = _check_preprocess(raw, version, where)
        return cls(
            directory=directory,
            format_version=version,
            name=name,
            arch=arch,
            latent_dim=latent_dim,
            likelihood=likelihood,
            sigma=sigma,
            graphs=graphs,
            files=files,
            variants=_check_variants(raw.get("variants", {}), files, where),
            raw=copy.deepcopy(raw),
            external=external,
            sessions=_check_sessions(raw.get("variants", {}), where),
            preprocess=copy.deepcopy(preprocess),
        )

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_FILE

    def graph_files(self, variant: str | None = None) -> dict[str, str]:
        """role -> relative file of ``variant`` (None: the graphs listed under ``graphs``)."""
        if variant is None:
            return dict(self.graphs)
        if not isinstance(variant, str) or variant not in self.variants:
            known = ", ".join(sorted(self.variants)) or "none"
            raise ModelFormatError(f"{self.path}: no variant {variant!r} (variants: {known})")
        return dict(self.variants[variant])

    def session(self, variant: str | None = None) -> dict[str, str]:
        """``variant``'s session settings (``min_optimization``, ``optimization``), checked;
        {} for the default graphs and for a variant without a ``session`` entry."""
        if variant is None:
            return {}
        self.graph_files(variant)  # refuses an unknown variant
        return dict(self.sessions.get(variant, {}))

    def external_files(self, role: str, variant: str | None = None) -> tuple[str, ...]:
        """Files whose bytes ``role``'s graph needs as external data.

        A variant's own graphs are self-contained; a variant may also reuse a default graph
        (the fp16 variant keeps the fp32 encoder), which then reads what it always reads.
        """
        if variant is not None and self.graph_files(variant)[role] != self.graphs[role]:
            return ()
        return tuple(self.external.get(role, ()))

    def section(self, key: str, default: Any = None) -> Any:
        """A copy of the top-level section ``key`` (e.g. "training"), or ``default``."""
        return copy.deepcopy(self.raw.get(key, default))

    # ---- writing ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        name: str,
        arch: str,
        latent_dim: int,
        likelihood: Mapping[str, Any],
        graphs: Mapping[str, Mapping[str, Any]],
        files: Mapping[str, FileEntry],
        preprocess: Mapping[str, Any] | str,
        **sections: Any,
    ) -> Manifest:
        """A new, checked manifest for ``directory`` (written by :meth:`write`).

        ``likelihood``: see :func:`likelihood_section`; ``graphs``: role -> :func:`graph_entry`;
        ``preprocess``: a spec (e.g. ``preprocess_spec.builtin("mnist")``) or "none";
        ``sections``: informational top-level keys, kept in the order given.
        """
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "arch": arch,
            "latent_dim": int(latent_dim),
            "image": copy.deepcopy(IMAGE),
            "likelihood": dict(likelihood),
            "graphs": {role: dict(entry) for role, entry in graphs.items()},
            "files": {rel: entry.to_dict() for rel, entry in files.items()},
            PREPROCESS_SECTION: copy.deepcopy(preprocess),
        }
        for key, value in sections.items():
            _check_section_key(key)
            doc[key] = value
        return cls.from_dict(doc, directory)

    def to_dict(self) -> dict[str, Any]:
        """The manifest document (a deep copy)."""
        return copy.deepcopy(dict(self.raw))

    def to_json(self) -> str:
        # allow_nan=False: NaN/Infinity are not JSON, and a reader refuses them
        return json.dumps(self.raw, indent=2, allow_nan=False) + "\n"

    def write(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write manifest.json atomically into ``directory`` (default: its own)."""
        target = self.directory if directory is None else Path(directory)
        return write_bytes(target / MANIFEST_FILE, self.to_json().encode("utf-8"))

    def moved_to(self, directory: str | os.PathLike[str]) -> Manifest:
        """The same manifest, belonging to another directory (e.g. a staged copy)."""
        return Manifest.from_dict(self.to_dict(), directory)

    def with_files(self, entries: Mapping[str, FileEntry]) -> Manifest:
        """Files added to (or replaced under) ``files``."""
        doc = self.to_dict()
        doc["files"].update({rel: entry.to_dict() for rel, entry in entries.items()})
        return Manifest.from_dict(doc, self.directory)

    def with_variant(self, name: str, files: Mapping[str, str], **info: Any) -> Manifest:
        """Variant ``name`` (role -> file, each already under ``files``) with its info keys."""
        doc = self.to_dict()
        doc.setdefault("variants", {})[name] = {**files, **info}
        return Manifest.from_dict(doc, self.directory)

    def with_section(self, key: str, value: Any) -> Manifest:
        """An informational top-level section set (or replaced), e.g. "quality"."""
        _check_section_key(key)
        doc = self.to_dict()
        doc[key] = copy.deepcopy(value)
        return Manifest.from_dict(doc, self.directory)

    def with_graph_info(self, role: str, **info: Any) -> Manifest:
        """Informational keys added to ``graphs.<role>`` (e.g. ``flops_per_image``)."""
        if role not in GRAPH_ROLES:
            raise ValueError(f"unknown graph role {role!r}; expected one of {GRAPH_ROLES}")
        reserved = {"file", "inputs", "outputs", "external_data"} & set(info)
        if reserved:
            raise ValueError(f"graph keys {sorted(reserved)} are set by graph_entry, not here")
        doc = self.to_dict()
        doc["graphs"][role].update(copy.deepcopy(info))
        return Manifest.from_dict(doc, self.directory)


# ---- the checks -----------------------------------------------------------------------------


def _fail(where: Path | str, reason: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {reason}")


def _check_section_key(key: str) -> None:
    if key in REQUIRED_KEYS or key in ("variants", PREPROCESS_SECTION):
        raise ValueError(f"{key!r} is not an informational section; it has its own method")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", str: "a string", int: "an integer", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in obj:
        raise _fail(where, f"missing required key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise _fail(where, f"key {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _check_header(raw: Mapping[str, Any], where: Path) -> tuple[int, str, str]:
    """(format_version, name, arch), checked in the order the format lists them."""
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
    return version, _require(raw, "name", str, where), _require(raw, "arch", str, where)


def _check_preprocess(raw: Mapping[str, Any], version: int, where: Path) -> dict[str, Any] | None:
    """The ``preprocess`` section checked: required from version 2 on, absent before."""
    if version < PREPROCESS_SINCE:
        if PREPROCESS_SECTION in raw:
            raise _fail(
                where,
                f"format_version {version} has no {PREPROCESS_SECTION!r} section "
                f"(it came with version {PREPROCESS_SINCE}); set format_version to "
                f"{PREPROCESS_SINCE} or remove the section",
            )
        return None
    if PREPROCESS_SECTION not in raw:
        raise _fail(
            where, f"missing required key {PREPROCESS_SECTION!r} (format_version {version})"
        )
    try:
        spec = validate(raw[PREPROCESS_SECTION])
    except SpecError as exc:
        raise _fail(where, str(exc)) from None
    if spec is not None and tuple(spec["size"]) != IMAGE_SHAPE[1:]:
        raise _fail(
            where,
            f"preprocess.size {spec['size']} must be the image's {list(IMAGE_SHAPE[1:])}",
        )
    return spec


def _check_image(image: Mapping[str, Any], where: Path) -> None:
    if image.get("shape") != list(IMAGE_SHAPE) or image.get("dtype") != IMAGE_DTYPE:
        raise _fail(
            where,
            f"image must have shape {list(IMAGE_SHAPE)} and dtype {IMAGE_DTYPE}, "
            f"got shape {image.get('shape')!r} dtype {image.get('dtype')!r}",
        )


def _check_likelihood(lik: Mapping[str, Any], where: Path) -> tuple[str, float | None]:
    name = lik.get("name")
    if name not in LIKELIHOODS:
        raise _fail(where, f"likelihood.name is {name!r}, expected one of {LIKELIHOODS}")
    if name != "gaussian":
        return name, None
    sigma = lik.get("sigma")
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool):
        raise _fail(where, f"likelihood.sigma must be a number, got {sigma!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise _fail(where, f"likelihood.sigma must be finite and > 0, got {sigma!r}")
    return name, sigma


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


def _check_files(listed: Mapping[str, Any], where: Path) -> dict[str, FileEntry]:
    files: dict[str, FileEntry] = {}
    for rel, entry in listed.items():
        rel = check_relative_path(rel, where)
        if not isinstance(entry, dict):
            raise _fail(where, f"files[{rel!r}] must be an object")
        sha, size, role = entry.get("sha256"), entry.get("bytes"), entry.get("role")
        if not isinstance(sha, str) or len(sha) != 64 or not _is_hex(sha):
            raise _fail(where, f"files[{rel!r}].sha256 must be 64 hex digits, got {sha!r}")
        if not _is_int(size) or size < 0:
            raise _fail(where, f"files[{rel!r}].bytes must be an integer >= 0, got {size!r}")
        if size > MAX_FILE_BYTES:
            raise _fail(
                where, f"files[{rel!r}].bytes is {size}, more than the format's {MAX_FILE_BYTES}"
            )
        if role not in FILE_ROLES:
            raise _fail(where, f"files[{rel!r}].role is {role!r}, expected one of {FILE_ROLES}")
        files[rel] = FileEntry(sha.lower(), size, role)
    return files


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


def _check_graphs(
    section: Mapping[str, Any], files: Mapping[str, FileEntry], latent_dim: int, where: Path
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(role -> graph file, role -> its external-data files) of the ``graphs`` section."""
    graphs: dict[str, str] = {}
    for role in GRAPH_ROLES:
        if not isinstance(section.get(role), dict):
            raise _fail(where, f"graphs.{role} is missing or not an object")
        graphs[role] = _graph_file(section[role].get("file"), files, where, f"graphs.{role}.file")
    external: dict[str, tuple[str, ...]] = {}
    for role in GRAPH_ROLES:
        listed = section[role].get("external_data", [])
        what = f"graphs.{role}.external_data"
        if not isinstance(listed, list):
            raise _fail(where, f"{what} must be a list of files")
        external[role] = tuple(_listed_file(rel, files, where, what) for rel in listed)
    # Said first and in these words, because it is the mistake a hand-edited manifest makes.
    enc_l = _declared_latent(section["encoder"], "outputs", "mu")
    dec_l = _declared_latent(section["decoder"], "inputs", "z")
    if enc_l is not None and dec_l is not None and enc_l != dec_l:
        raise _fail(where, f"latent size mismatch: encoder produces {enc_l}, decoder takes {dec_l}")
    for role in GRAPH_ROLES:
        _check_declared(section[role], contract(role, latent_dim), where)
    return graphs, external


def _declared_latent(graph: Mapping[str, Any], side: str, name: str) -> Any:
    shape = graph.get(side, {}).get(name) if isinstance(graph.get(side), dict) else None
    return shape[1] if isinstance(shape, list) and len(shape) == 2 else None


def _check_declared(graph: Mapping[str, Any], spec: GraphSpec, where: Path) -> None:
    """The manifest's own description of a graph must match the contract."""
    for side, want in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        declared = _require(graph, side, dict, where)
        if set(declared) != {t.name for t in want}:
            raise _fail(
                where,
                f"graphs.{spec.role}.{side} are {sorted(declared)}, "
                f"expected {[t.name for t in want]}",
            )
        for tensor in want:
            got = _shape(declared[tensor.name], where, f"graphs.{spec.role}.{side}.{tensor.name}")
            if got != tensor.shape:
                raise _fail(
                    where,
                    f"graphs.{spec.role}.{side}.{tensor.name} has shape {format_shape(got)}, "
                    f"expected {format_shape(tensor.shape)}",
                )


def _shape(value: Any, where: Path, what: str) -> tuple[int | None, ...]:
    if not isinstance(value, list) or not all(v is None or _is_int(v) for v in value):
        raise _fail(where, f"{what}: shape must be a list of integers or null, got {value!r}")
    return tuple(value)


def _check_variants(
    section: Any, files: Mapping[str, FileEntry], where: Path
) -> dict[str, dict[str, str]]:
    if not isinstance(section, dict):
        raise _fail(where, "variants must be an object")
    variants: dict[str, dict[str, str]] = {}
    for vname, vobj in section.items():
        if not isinstance(vobj, dict):
            raise _fail(where, f"variants[{vname!r}] must be an object")
        variants[vname] = {
            role: _graph_file(vobj.get(role), files, where, f"variants[{vname!r}].{role}")
            for role in GRAPH_ROLES
        }
    return variants


def _check_sessions(section: Any, where: Path) -> dict[str, dict[str, str]]:
    """Each variant's optional ``session`` entry: known keys, known optimization levels, and
    ``optimization`` no weaker than ``min_optimization`` (docs/model-format.md)."""
    sessions: dict[str, dict[str, str]] = {}
    for vname, vobj in section.items():  # already checked to be objects
        if "session" not in vobj:
            continue
        entry, what = vobj["session"], f"variants[{vname!r}].session"
        if not isinstance(entry, dict):
            raise _fail(where, f"{what} must be an object")
        unknown = sorted(set(entry) - set(SESSION_KEYS))
        if unknown:
            raise _fail(where, f"{what} has unknown key(s) {unknown}; known: {list(SESSION_KEYS)}")
        for key, level in entry.items():
            if level not in OPTIMIZATION_LEVELS:
                raise _fail(
                    where, f"{what}.{key} is {level!r}, expected one of {list(OPTIMIZATION_LEVELS)}"
                )
        low, best = entry.get("min_optimization"), entry.get("optimization")
        if low and best and OPTIMIZATION_LEVELS.index(best) < OPTIMIZATION_LEVELS.index(low):
            raise _fail(
                where, f"{what}.optimization {best!r} is below its min_optimization {low!r}"
            )
        sessions[vname] = dict(entry)
    return sessions
