"""The ONNX Runtime engine: execution providers, session options, sessions from verified bytes.

Options (``VAE(..., providers=, fallback=, threads=, optimization=, spinning=)``):
providers may be given as ORT names, ``(name, options)`` pairs, or the shorthands "cpu" and
"cuda" (CUDA, then CPU). A provider that this onnxruntime build lacks is refused up front
(ORT itself would silently fall back to CPU) unless ``fallback=True``; when a session still
ends up without a provider that was asked for, a :class:`ProviderWarning` says so.

A variant's manifest ``session`` entry (docs/model-format.md) is honoured: without an
``optimization`` option its graphs run at the entry's ``optimization``; an option below its
``min_optimization`` is refused (the int8 graphs' QDQ nodes are fused only from "extended").

``rows_per_run``: a larger batch runs as consecutive runs of that many rows (0: never
split). By default ROWS_PER_RUN where the session runs on the CPU: MLAS's kernels keep a
chunk's im2col buffers and activations in the caches; at batch 1024, 1 thread, chunks of
128 ran 1.17x (fp32 decoder) to 1.49x (int8 encoder) the images per CPU-second of one run
(docs/performance.md). A session on a GPU provider runs a batch whole: on an H100, runs of
128 rows gave 0.63-0.79x the images/s of one run at batches of 256 to 65,536.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from vae_format.contract import OPTIMIZATION_LEVELS as LEVEL_NAMES
from vae_format.contract import dtype_of_onnx_type

from ..errors import InputError, ModelFormatError, ProviderError, ProviderWarning, RunError
from .base import TensorInfo
from .ort_banner import banner_caught, banner_reason

ort.set_default_logger_severity(3)  # the environment's own log: errors only (we warn instead)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
SHORTHANDS: dict[str, tuple[str, ...]] = {"cpu": (CPU,), "cuda": (CUDA, CPU), "gpu": (CUDA, CPU)}
# Distributions that all install the `onnxruntime` module; two at once overwrite each other.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
)
# What a session's run raises when ONNX Runtime fails inside (allocation, a kernel error):
# its own pybind exception types (Fail, RuntimeException, ...), and MemoryError.
ORT_ERRORS = (
    MemoryError,
    RuntimeError,
    *(e for e in vars(_ort_state).values() if isinstance(e, type) and issubclass(e, Exception)),
)
OPTIMIZATION_LEVELS = dict(  # the format's level names (weakest first) -> ORT's
    zip(
        LEVEL_NAMES,
        (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        ),
        strict=True,
    )
)
DEFAULT_OPTIMIZATION = "all"
ROWS_PER_RUN = 128  # measured best of 64/128/256/whole batch on AVX-512 (see the docstring)

MAX_THREADS = 4096  # ORT takes a C int; more threads than any machine has cores is a mistake
OPTIONS = ("providers", "fallback", "threads", "optimization", "spinning", "rows_per_run")

ProviderSpec = str | tuple[str, dict[str, Any]]
Providers = str | Sequence[ProviderSpec] | None


def create(options: Mapping[str, Any], session: Mapping[str, str] | None = None) -> OrtEngine:
    """The engine with ``options`` (keys from OPTIONS; others are refused) for graphs whose
    variant has the ``session`` settings (a checked manifest entry)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(
            f"backend 'onnxruntime' has no option {', '.join(unknown)}; "
            f"its options: {', '.join(OPTIONS)}"
        )
    settings = dict(options)
    settings["optimization"] = optimization_for(options.get("optimization"), session or {})
    return OrtEngine(**settings)


def optimization_for(asked: str | None, session: Mapping[str, str]) -> str:
    """The optimization level to run a variant's graphs at: the one asked for, else the
    variant's recommended one, else DEFAULT_OPTIMIZATION; one below the variant's minimum is
    refused rather than raised, since the caller named it."""
    level = asked if asked is not None else session.get("optimization", DEFAULT_OPTIMIZATION)
    if not isinstance(level, str) or level not in OPTIMIZATION_LEVELS:  # a list is unhashable
        raise InputError(
            f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {level!r}"
        )
    low = session.get("min_optimization")
    if low is not None and LEVEL_NAMES.index(level) < LEVEL_NAMES.index(low):
        raise InputError(
            f"optimization={level!r} is below what this variant's graphs need: "
            f"{low!r} or higher (its manifest's session.min_optimization)"
        )
    return level


class OrtEngine:
    """ONNX Runtime with checked providers and session settings; one session per graph."""

    name = "onnxruntime"

    def __init__(
        self,
        providers: Providers = None,
        fallback: bool = False,
        threads: int | None = None,
        optimization: str = DEFAULT_OPTIMIZATION,
        spinning: bool = False,
        rows_per_run: int | None = None,
    ) -> None:
        warn_if_conflicting_install()
        self.providers = resolve_providers(providers, fallback)
        self.threads = threads
        self.optimization = optimization
        if rows_per_run is not None and (
            isinstance(rows_per_run, bool) or not isinstance(rows_per_run, int) or rows_per_run < 0
        ):
            raise InputError(
                f"rows_per_run must be an integer >= 0 (0: never split), got {rows_per_run!r}"
            )
        self.rows_per_run = rows_per_run
        self._settings = (threads, optimization, spinning)
        session_options(*self._settings)  # refuse bad settings before any graph is read

    def load(self, graph: bytes, external: Mapping[str, bytes], where: Path) -> OrtRunner:
        options = session_options(*self._settings)
        if external:  # weights the graph shares with the checkpoints, from memory
            names = list(external)
            options.add_external_initializers_from_files_in_memory(
                names, [external[n] for n in names], [len(external[n]) for n in names]
            )
        session = create_session(graph, where, self.providers, options)
        return OrtRunner(session, where, self.rows_per_run)

    def describe(self) -> dict[str, Any]:
        return {
            "providers_requested": [_name(p) for p in self.providers],
            "providers_available": available_providers(),
            "threads": self.threads,
            "optimization": self.optimization,
            "onnxruntime": ort.__version__,
        }


class OrtRunner:
    """One InferenceSession (its ``run`` is thread-safe); batches above ``rows_per_run``
    rows run in chunks of that many (0: never split; None: ROWS_PER_RUN on the CPU, whole
    batches on a GPU provider)."""

    def __init__(
        self, session: ort.InferenceSession, where: Path, rows_per_run: int | None = None
    ) -> None:
        self.session = session
        self.where = where
        self._session_run = session.run
        if rows_per_run is None:
            rows_per_run = ROWS_PER_RUN if session.get_providers()[0] == CPU else 0
        self.rows_per_run = rows_per_run
        self.inputs = tuple(_tensor_info(arg) for arg in session.get_inputs())
        self.outputs = tuple(_tensor_info(arg) for arg in session.get_outputs())
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        try:
            rows = self.rows_per_run
            if not rows or len(next(iter(feeds.values()))) <= rows:  # the hot path: one call
                return self._session_run(output_names, feeds)  # type: ignore[arg-type]
            n = len(next(iter(feeds.values())))
            parts = [
                self._session_run(output_names, {k: v[i : i + rows] for k, v in feeds.items()})
                for i in range(0, n, rows)
            ]
            return [np.concatenate(chunks) for chunks in zip(*parts, strict=True)]
        except ORT_ERRORS as exc:  # e.g. a buffer it cannot allocate: one line, no traceback
            raise RunError(
                f"{self.where}: ONNX Runtime failed to run it ({_first_line(exc)})"
            ) from None

    def describe(self) -> dict[str, Any]:
        return {"providers": list(self.session.get_providers()), "rows_per_run": self.rows_per_run}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tensor_info(arg: Any) -> TensorInfo:
    shape = tuple(arg.shape) if arg.shape is not None else None
    return TensorInfo(arg.name, shape, dtype_of_onnx_type(arg.type))


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


@functools.cache
def installed_ort_distributions() -> tuple[str, ...]:
    """The onnxruntime* distributions installed beside the imported `onnxruntime` (once per
    process). A listing of that folder rules out the usual single install; importlib.metadata
    (34 ms to import, a tenth of the cold-start budget) confirms only a suspected clash."""
    site = Path(ort.__file__).resolve().parents[1]
    try:
        names = {
            entry.name.split("-")[0].lower().replace("_", "-")
            for entry in os.scandir(site)
            if entry.name.lower().startswith("onnxruntime")
            and entry.name.endswith((".dist-info", ".egg-info"))
        }
    except OSError:
        names = set(ORT_DISTRIBUTIONS)
    if len(names) <= 1:
        return tuple(names)
    import importlib.metadata as md

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def warn_if_conflicting_install() -> None:
    found = installed_ort_distributions()
    if len(found) > 1:
        warnings.warn(
            f"several ONNX Runtime distributions are installed ({', '.join(found)}); they share "
            "the `onnxruntime` module and break each other. Keep exactly one: "
            "pip install 'vae-onnx[cpu]' or 'vae-onnx[gpu]'",
            ProviderWarning,
            stacklevel=6,
        )


def resolve_providers(providers: Providers, fallback: bool = False) -> list[ProviderSpec]:
    """The provider list to hand to ORT, checked against what this build offers."""
    if providers is None:
        return [CPU]
    if isinstance(providers, str) or _is_pair(providers):
        items: list[Any] = [providers]
    elif isinstance(providers, (list, tuple)):
        items = list(providers)
    else:
        raise ProviderError(f"providers must be a name or a list, got {providers!r}")
    if not items:
        raise ProviderError("providers is empty; omit it to run on the CPU")
    available = available_providers()
    resolved: list[ProviderSpec] = []
    missing: list[str] = []
    for item in items:
        for spec in _expand(item):
            name = spec if isinstance(spec, str) else spec[0]
            if any(name == (r if isinstance(r, str) else r[0]) for r in resolved):
                continue
            if name not in available:
                missing.append(name)
                continue
            resolved.append(spec)
    if missing and not fallback:
        raise ProviderError(
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
            f"build; available: {', '.join(available)}"
            + (
                " (install vae-onnx[gpu] instead of vae-onnx[cpu] for CUDA)"
                if CUDA in missing
                else ""
            )
        )
    if missing:
        warnings.warn(
            f"execution provider(s) {', '.join(missing)} not available; "
            f"falling back to {CPU} (available: {', '.join(available)})",
            ProviderWarning,
            stacklevel=6,
        )
    if not resolved or (missing and all(_name(r) != CPU for r in resolved)):
        resolved.append(CPU)
    return resolved


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], dict)
    )


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def _expand(item: Any) -> list[ProviderSpec]:
    if isinstance(item, str):
        return list(SHORTHANDS.get(item.lower(), (item,)))
    if _is_pair(item):
        return [(item[0], dict(item[1]))]
    raise ProviderError(
        f"a provider must be a name or a (name, options) pair, got {item!r}; "
        "e.g. 'cpu', 'cuda', 'CUDAExecutionProvider' or ('CUDAExecutionProvider', {'device_id': 0})"
    )


def session_options(
    threads: int | None, optimization: str, spinning: bool = False
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if not spinning:
        # Idle ORT threads otherwise spin for a while after each run, taking the cores from
        # whatever runs next, in the process or beside it (measured 1.2-1.5x slower runs
        # at 2 threads on a loaded machine, docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        if (
            isinstance(threads, bool)
            or not isinstance(threads, int)
            or not 0 <= threads <= MAX_THREADS
        ):
            raise InputError(
                f"threads must be an integer from 0 (ORT default) to {MAX_THREADS}, got {threads!r}"
            )
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # the graphs are sequential; no second pool needed
    if not isinstance(optimization, str) or optimization not in OPTIMIZATION_LEVELS:
        raise InputError(
            f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}"
        )
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    # ORT's own log goes to stderr unformatted (in colour); its errors reach the caller as our
    # one-line ModelFormatError/RunError, so only fatal ones are logged.
    options.log_severity_level = 4
    return options


def create_session(
    model: bytes, path: Path, providers: list[ProviderSpec], options: ort.SessionOptions
) -> ort.InferenceSession:
    """A session from verified model bytes; a graph ORT cannot load is a ModelFormatError."""
    wanted = [_name(p) for p in providers if _name(p) != CPU]
    try:
        # Only a GPU request can make ORT print its fallback banner (see ort_banner).
        with banner_caught() if wanted else contextlib.nullcontext([]) as banner:
            session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelFormatError(
            f"{path}: ONNX Runtime cannot load it ({_first_line(exc)})"
        ) from None
    # A GPU provider failing later, inside a run, would make ORT print to stdout and go on on
    # the CPU unannounced: it is a one-line RunError instead (OrtRunner.run).
    session.disable_fallback()
    active = session.get_providers()
    lost = [name for name in wanted if name not in active]
    if lost:
        reason = banner_reason(banner) or "check the CUDA/cuDNN install"
        warnings.warn(
            f"{path.name}: asked for {', '.join(lost)} but the session runs on "
            f"{', '.join(active)} (the provider failed to initialise: {reason})",
            ProviderWarning,
            stacklevel=5,
        )
    return session
