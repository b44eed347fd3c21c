"""The engines that can run a model's graphs, by name (see :mod:`.base` for the seam).

Each engine is one module exposing ``create(options, session) -> Engine``, imported only when
asked for, so an engine's library is needed only by those who use it. To add one: write
the module and add its line to ``ENGINES``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from vae_format.extras import RUNTIME_INSTALL
from vae_format.manifest import Manifest
from vae_format.verified import read_graph

# ONNX Runtime (1.29 on) has telemetry on Linux and macOS: when it is imported it persists a
# device ID and an event store under ~/.cache/Microsoft and, where home is not writable,
# prints a colour-coded warning on every run. ORT_DISABLE_TELEMETRY=1 is its documented full
# opt-out (nothing created, persisted or sent), read once when onnxruntime is imported, so it
# is set here, before any engine module imports it, unless the user set it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ..errors import InputError
from .base import Engine, GraphRunner, TensorInfo

DEFAULT_ENGINE = "onnxruntime"
ENGINES: dict[str, str] = {
    "onnxruntime": "vae_runtime.engines.ort",
    "openvino": "vae_runtime.engines.openvino",  # pip install 'vae-onnx[openvino]'
}

# How to install an engine's library (a bare `pip install vae-onnx` has none).
INSTALL = {"onnxruntime": RUNTIME_INSTALL, "openvino": "pip install 'vae-onnx[openvino]'"}

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "GraphRunner",
    "TensorInfo",
    "create_engine",
    "load_graph",
]


def create_engine(
    name: str, options: Mapping[str, Any], session: Mapping[str, str] | None = None
) -> Engine:
    """Engine ``name`` configured with ``options``; an unknown name is an InputError.
    ``session``: the variant's checked session settings (``Manifest.session``), which an
    engine honours where they apply to it (ONNX Runtime's optimization levels)."""
    if not isinstance(name, str) or name not in ENGINES:
        raise InputError(f"unknown backend {name!r}; available: {', '.join(ENGINES)}")
    try:
        module = importlib.import_module(ENGINES[name])
    except ModuleNotFoundError as exc:  # the engine's library is an extra
        if exc.name is None or exc.name.startswith("vae_runtime"):
            raise
        install = INSTALL.get(name, f"pip install 'vae-onnx[{name}]'")
        raise InputError(
            f"backend {name!r} needs the {exc.name!r} package, which is not installed: {install}"
        ) from None
    engine: Engine = module.create(options, session or {})
    return engine


def load_graph(
    engine: Engine, manifest: Manifest, role: str, variant: str | None = None
) -> GraphRunner:
    """The one way the runtime hands an engine a graph (VAE, its Ray actors, engine parity):
    read_graph's verified bytes, already held to vae_format's graph policy (external data
    only from the graph's listed files, the operator allow-list, size bounds), never a path.
    A refusal is a ModelFormatError naming the file, raised before the engine sees a byte."""
    graph = read_graph(manifest, role, variant)
    return engine.load(graph.data, graph.external, graph.path)
