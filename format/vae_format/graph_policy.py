"""What a graph in a model directory may hold, checked on its verified bytes before any
engine sees them (docs/model-format.md, "Trust model").

The manifest's sha256 proves the files are the ones it lists, not who wrote them, so a
consistent but hostile directory must still be unable to make an engine do what export
never asks of it: read a file the manifest did not verify (external data anywhere in the
model), run an operator export does not produce, or allocate absurd memory from declared
sizes. Every limit below is derived from what export writes, with margin; each refusal is
a ModelFormatError naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import ModelFormatError
from .onnx_wire import ATTR_GRAPH, ATTR_GRAPHS, Model, Tensor, WireError, parse_model

# The operators export writes, in every form and variant: fp32 graphs (phase-form and
# ConvTranspose decoders; the sigmoid as Neg/Exp/Add/Reciprocal), int8 QDQ graphs (the
# merged-phase decoders' border mask is a Min), fp16 graphs (Casts at the ends). An
# architecture that needs another operator adds it here and to docs/model-format.md: a
# format change.
ALLOWED_OPS = frozenset(
    {
        "Add",
        "Cast",
        "Concat",
        "Conv",
        "ConvTranspose",
        "DepthToSpace",
        "DequantizeLinear",
        "Exp",
        "Gemm",
        "Identity",
        "Min",
        "Neg",
        "QuantizeLinear",
        "Reciprocal",
        "Relu",
        "Reshape",
    }
)
ALLOWED_DOMAINS = ("", "ai.onnx")
# Tensor element types export writes -> bytes per element:
# FLOAT, UINT8, INT8, INT32 (int8 biases), INT64 (shapes), FLOAT16.
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 10: 2}
_TYPE_NAMES = dict(  # TensorProto.DataType, by code
    enumerate(
        [
            "undefined",
            "float",
            "uint8",
            "int8",
            "uint16",
            "int16",
            "int32",
            "int64",
            "string",
            "bool",
            "float16",
            "double",
            "uint32",
            "uint64",
            "complex64",
            "complex128",
            "bfloat16",
        ]
    )
)

# Size limits. Export's largest tensor holds 802,816 elements (3136 x 256), its largest
# graph under 4 MB of weights and 48 nodes, its largest declared dimension is 3136 and its
# largest integer attribute 10 (Cast's `to`); kernels, strides, pads are at most 4.
MAX_TENSOR_ELEMENTS = 1 << 24  # 16.8 M elements (64 MiB as float32)
MAX_GRAPH_TENSOR_BYTES = 256 << 20  # all tensors of one graph together
MAX_NODES = 4096
MAX_DECLARED_DIM = 1 << 16  # a fixed dimension of a declared input/output/value_info
MAX_DECLARED_ELEMENTS = 1 << 24  # elements per image of a declared value (N counted as 1)
MAX_ATTRIBUTE_INT = 1 << 16  # |value| of any integer attribute
SPATIAL_ATTRIBUTES = ("kernel_shape", "strides", "dilations", "pads", "output_padding")
MAX_SPATIAL = 16  # |value| of the attributes above, and DepthToSpace's blocksize
# Keys of an external-data entry, and what no location may name: ONNX Runtime reads a
# tensor at a raw process address from a location holding this tag.
EXTERNAL_KEYS = ("location", "offset", "length", "checksum")
ORT_ADDRESS_TAG = "_ORT_MEM_ADDR_"
# metadata_props keys refused: ONNX Runtime may take session options from "ort_config"
# (when ORT_LOAD_CONFIG_FROM_MODEL=1), e.g. a profiling file to write.
FORBIDDEN_METADATA = ("ort_config",)


def check_graph_bytes(data: bytes, external: Mapping[str, bytes], where: Path | str) -> Model:
    """The model in ``data`` once it is held to the policy; ``external``: the files (by
    their manifest path) whose verified bytes the graph may read its external data from.
    Anything else is a ModelFormatError naming ``where``."""
    try:
        model = parse_model(data)
    except WireError as exc:
        raise ModelFormatError(f"{where}: not a readable ONNX model ({exc})") from None
    for tensor in model.tensors():
        check_external_data(tensor, external, where)
    _check_structure(model, where)
    _check_tensors(model.tensors(), where)
    _check_attributes(model, where)
    _check_declared(model, where)
    return model


def _fail(where: Path | str, reason: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {reason}")


def check_external_data(tensor: Tensor, external: Mapping[str, bytes], where: Path | str) -> None:
    """A tensor's external data must lie inside one of the ``external`` files, exactly
    where and as long as its shape says; an engine is then handed those bytes from memory
    and never opens a file by itself."""
    what = f"tensor {tensor.name!r}"
    if tensor.data_location not in (0, 1):
        raise _fail(where, f"{what} has an unknown data_location {tensor.data_location}")
    if not tensor.is_external:
        if tensor.external_data:
            raise _fail(where, f"{what} has external_data entries but is not EXTERNAL")
        return
    entries: dict[str, str] = {}
    for key, value in tensor.external_data:
        if key not in EXTERNAL_KEYS or key in entries:
            raise _fail(where, f"{what}: external_data key {key!r} is unknown or repeated")
        entries[key] = value
    location = entries.get("location", "")
    listed = ", ".join(sorted(external)) or "none"
    if location not in external or ORT_ADDRESS_TAG in location:
        raise _fail(
            where,
            f"{what} reads external data from {location!r}, which is not one of the verified "
            f"files the manifest lists for this graph ({listed}); refused: an engine would "
            "open a file the manifest did not verify",
        )
    if tensor.raw_size is not None or tensor.typed_count:
        raise _fail(where, f"{what} holds data of its own as well as external data")
    item = ELEMENT_BYTES.get(tensor.data_type)
    if item is None:
        raise _fail(
            where, f"{what} has element type {_type_name(tensor.data_type)}, not one export writes"
        )
    offset, length = _decimal(entries.get("offset", "0")), _decimal(entries.get("length", ""))
    want = tensor.elements * item if all(d >= 0 for d in tensor.dims) else -1
    size = len(external[location])
    if offset is None or length != want or offset + want > size:
        raise _fail(
            where,
            f"{what}: external data (offset {entries.get('offset')}, length "
            f"{entries.get('length')}) does not hold its {want} bytes inside {location!r} "
            f"({size} bytes)",
        )


def _type_name(code: int) -> str:
    return f"{code} ({_TYPE_NAMES.get(code, 'unknown')})"


def _decimal(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None


def _check_structure(model: Model, where: Path | str) -> None:
    if model.functions:
        raise _fail(where, "holds local functions; the format's graphs have none")
    if model.training_graphs:
        raise _fail(where, "holds training graphs; the format's graphs have none")
    domains = sorted({d for d, _ in model.opset_import} - set(ALLOWED_DOMAINS))
    if domains:
        raise _fail(where, f"imports operator domain(s) {domains}; only the ONNX domain is allowed")
    if any(g.sparse_initializers for g in model.graphs()):
        raise _fail(where, "holds sparse initializers; the format's graphs have none")
    nodes = list(model.all_nodes())
    if len(nodes) > MAX_NODES:
        raise _fail(where, f"has {len(nodes)} nodes, more than the format's {MAX_NODES}")
    for node in nodes:
        if node.domain not in ALLOWED_DOMAINS or node.op_type not in ALLOWED_OPS:
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            raise _fail(
                where,
                f"node {node.name!r} runs operator {op!r}, which export never writes "
                f"(allowed: {', '.join(sorted(ALLOWED_OPS))})",
            )
    for key, _ in model.metadata_props:
        if key in FORBIDDEN_METADATA:
            raise _fail(where, f"metadata_props holds {key!r}, which the format forbids")


def _check_tensors(tensors: Iterable[Tensor], where: Path | str) -> None:
    total = 0
    for tensor in tensors:
        what = f"tensor {tensor.name!r}"
        item = ELEMENT_BYTES.get(tensor.data_type)
        if item is None:
            raise _fail(
                where,
                f"{what} has element type {_type_name(tensor.data_type)}, not one export writes",
            )
        if any(d < 0 for d in tensor.dims):
            raise _fail(where, f"{what} has a negative dimension {list(tensor.dims)}")
        count = tensor.elements
        if count > MAX_TENSOR_ELEMENTS:
            raise _fail(
                where,
                f"{what} declares {count} elements {list(tensor.dims)}, more than the "
                f"format's {MAX_TENSOR_ELEMENTS}",
            )
        if tensor.segmented:
            raise _fail(where, f"{what} is segmented")
        if (
            not tensor.is_external
            and count
            and not (
                tensor.raw_size == count * item
                or (tensor.raw_size is None and tensor.typed_count == count)
            )
        ):
            held = (
                tensor.raw_size if tensor.raw_size is not None else f"{tensor.typed_count} elements"
            )
            raise _fail(where, f"{what} declares {count} elements but holds {held} (bytes)")
        total += count * item
    if total > MAX_GRAPH_TENSOR_BYTES:
        raise _fail(
            where,
            f"its tensors hold {total} bytes, more than the format's {MAX_GRAPH_TENSOR_BYTES}",
        )


def _check_attributes(model: Model, where: Path | str) -> None:
    for node in model.all_nodes():
        for a in node.attributes:
            what = f"node {node.name!r} ({node.op_type}) attribute {a.name!r}"
            if a.ref_attr_name or a.type in (ATTR_GRAPH, ATTR_GRAPHS) or a.graphs:
                raise _fail(where, f"{what} refers to a function attribute or holds a graph")
            limit = (
                MAX_SPATIAL if a.name in (*SPATIAL_ATTRIBUTES, "blocksize") else MAX_ATTRIBUTE_INT
            )
            ints = (*a.ints, *(() if a.i is None else (a.i,)))
            if any(abs(v) > limit for v in ints):
                raise _fail(
                    where, f"{what} holds {max(ints, key=abs)}, beyond the format's {limit}"
                )
            floats = (*a.floats, *(() if a.f is None else (a.f,)))
            if not all(math.isfinite(v) for v in floats):
                raise _fail(where, f"{what} holds a non-finite number")


def _check_declared(model: Model, where: Path | str) -> None:
    for graph in model.graphs():
        for value in (*graph.inputs, *graph.outputs, *graph.value_info):
            what = f"declared value {value.name!r}"
            if not value.is_tensor or (
                value.elem_type is not None and value.elem_type not in ELEMENT_BYTES
            ):
                raise _fail(where, f"{what} is not a tensor of a type export writes")
            fixed = [d for d in value.shape or () if isinstance(d, int)]
            if (
                any(d < 0 or d > MAX_DECLARED_DIM for d in fixed)
                or math.prod(fixed) > MAX_DECLARED_ELEMENTS
            ):
                raise _fail(
                    where,
                    f"{what} has shape {list(value.shape or ())}; the format allows dimensions "
                    f"up to {MAX_DECLARED_DIM} and {MAX_DECLARED_ELEMENTS} elements per image",
                )
