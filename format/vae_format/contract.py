"""What a model directory promises, format versions 1 and 2 (docs/model-format.md), written once.

Export writes from these constants, the runtime checks against them: the format's name and
versions, the image, the two graphs' tensors (names, shapes, dtypes), the ``metadata_props``
each graph carries and the input convention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FORMAT = "vae-onnx-model"
FORMAT_VERSION = 2  # what export writes
SUPPORTED_VERSIONS = (1, 2)  # what a reader accepts
# Version 2 adds the required ``preprocess`` section (vae_format.preprocess_spec); a
# version 1 directory has none and reads raw images as before ("none").
PREPROCESS_SINCE = 2
MANIFEST_FILE = "manifest.json"
# Size limits a reader checks before reading (export writes manifests of about 12 KB and
# files of at most 3.4 MB; see vae_format.graph_policy for what a graph may hold).
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 256 << 20

IMAGE_SHAPE = (1, 28, 28)
IMAGE_DTYPE = "float32"
# The image as the manifest describes it (its ``image`` section).
IMAGE: dict[str, Any] = {
    "shape": list(IMAGE_SHAPE),
    "dtype": IMAGE_DTYPE,
    "range": [0, 1],
    "convention": "white digit on black background",
}
INPUT_CONVENTION = "float32 in [0,1], white digit on black"

GRAPH_ROLES = ("encoder", "decoder")
FILE_ROLES = ("graph", "checkpoint", "config", "log")
LIKELIHOODS = ("bernoulli", "gaussian")

# A variant's optional ``session`` entry: the ONNX Runtime graph optimization its graphs
# need at least (``min_optimization``) and run best at (``optimization``). Levels weakest
# first, as ONNX Runtime orders them.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
SESSION_KEYS = ("min_optimization", "optimization")

META_PREFIX = "vae_onnx."
# metadata_props a reader requires to match the manifest, and ones it compares only when a
# graph carries them (quantizers may drop them).
REQUIRED_METADATA = ("format_version", "role", "latent_dim")
DESCRIPTIVE_METADATA = ("arch", "likelihood")

# ONNX tensor element types by their ONNX name, as numpy dtype names (engines report these).
ONNX_ELEMENT_TYPES = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "bool": "bool",
    "string": "str",
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its shape (None = the dynamic batch dimension N) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphSpec:
    """One graph's contract: its ordered inputs and outputs."""

    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def declared(self) -> dict[str, dict[str, list[int | None]]]:
        """The ``inputs``/``outputs`` the manifest declares for this graph (JSON-ready)."""
        return {
            "inputs": {t.name: list(t.shape) for t in self.inputs},
            "outputs": {t.name: list(t.shape) for t in self.outputs},
        }


def contract(role: str, latent_dim: int) -> GraphSpec:
    """The signature docs/model-format.md prescribes for ``role`` at latent size L."""
    image = (None, *IMAGE_SHAPE)
    latent = (None, latent_dim)
    if role == "encoder":
        return GraphSpec(
            role,
            (TensorSpec("x", image),),
            (TensorSpec("mu", latent), TensorSpec("logvar", latent)),
        )
    if role == "decoder":
        return GraphSpec(role, (TensorSpec("z", latent),), (TensorSpec("x_hat", image),))
    raise ValueError(f"unknown graph role {role!r}; expected one of {GRAPH_ROLES}")


def graph_metadata(
    *, name: str, role: str, arch: str, latent_dim: int, likelihood: str, dataset: str
) -> dict[str, str]:
    """The ``metadata_props`` export writes into a graph, so a lone .onnx says what it is."""
    values = {
        "format_version": FORMAT_VERSION,
        "role": role,
        "name": name,
        "arch": arch,
        "latent_dim": latent_dim,
        "likelihood": likelihood,
        "dataset": dataset,
        "input_convention": INPUT_CONVENTION,
    }
    return {META_PREFIX + key: str(value) for key, value in values.items()}


def format_shape(shape: Iterable[int | str | None]) -> str:
    """A shape as the docs write it: dynamic dimensions are N, e.g. [N, 1, 28, 28]."""
    return "[" + ", ".join("N" if d is None or isinstance(d, str) else str(d) for d in shape) + "]"


def onnx_type(dtype: str) -> str:
    """A numpy dtype name as ONNX Runtime writes the tensor type: float32 -> tensor(float)."""
    for onnx_name, numpy_name in ONNX_ELEMENT_TYPES.items():
        if numpy_name == dtype:
            return f"tensor({onnx_name})"
    return dtype


def dtype_of_onnx_type(type_name: str) -> str:
    """The inverse of :func:`onnx_type`: tensor(double) -> float64 (unknown: unchanged)."""
    inner = type_name[len("tensor(") : -1] if type_name.startswith("tensor(") else type_name
    return ONNX_ELEMENT_TYPES.get(inner, type_name)
