"""The engine seam: what the runtime needs from whatever runs the two graphs.

An engine is configured once per model (:class:`Engine`) and loads each graph into a
:class:`GraphRunner`. It is handed the graph's bytes and its external-data files' bytes,
all verified against the manifest, never a path: nothing the manifest did not check is
opened. The runner reports its signature and metadata_props (checked against the
contract before any use) and runs named inputs to named outputs. A runner may prepare
work lazily, e.g. compile per batch size on first use; ``run`` just has to be thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as an engine sees it. ``shape``: ints for fixed dimensions,
    a string or None for symbolic ones, None for an unknown rank; ``dtype``: a numpy dtype
    name ("float32"), or the engine's own type name when numpy has none."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: str


class GraphRunner(Protocol):
    """One loaded graph."""

    @property
    def inputs(self) -> Sequence[TensorInfo]: ...

    @property
    def outputs(self) -> Sequence[TensorInfo]: ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """The graph's custom metadata_props."""
        ...

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The outputs named (None: all, in graph order) for the inputs in ``feeds``."""
        ...

    def describe(self) -> dict[str, Any]:
        """What this graph runs on, as plain data (e.g. {"providers": [...]})."""
        ...


class Engine(Protocol):
    """An engine configured with its options (threads, devices, ...), loading graphs."""

    name: str

    def load(self, graph: bytes, external: Mapping[str, bytes], where: Path) -> GraphRunner:
        """A runner for the verified ``graph`` bytes; ``external``: its external-data files,
        relative path -> verified bytes. ``where`` names the file in errors; it is never
        opened. A graph the engine cannot load is a ModelFormatError naming ``where``."""
        ...

    def describe(self) -> dict[str, Any]:
        """The engine's settings and version, as plain data (for VAE.info)."""
        ...
