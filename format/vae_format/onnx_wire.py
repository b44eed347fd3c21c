"""A reader of ONNX models in the protobuf wire format, without onnx or protobuf.

Why: the runtime must look inside a graph before an engine does (which files its tensors
read, which operators it runs, how large its tensors are), and it may not import onnx.
This reads exactly the parts of onnx.proto a check needs: ModelProto -> GraphProto ->
nodes (op_type, domain, attributes, subgraphs included), initializers (dims, data_type,
data_location, external_data, data sizes), inputs/outputs/value_info (declared shapes),
metadata_props, opset imports, local functions and training info.

It is stricter than protobuf: a singular field given twice (protobuf would merge or
overwrite, so a checker reading the last copy could miss what an engine reads), a known
field with the wrong wire type, a group, a truncated field or bad UTF-8 is an error, so
this reader and an engine's cannot see different models in the same bytes. Unknown
fields are skipped, as protobuf skips them.

The low-level helpers (:func:`read_varint`, :func:`fields`, :func:`encode_varint`,
:func:`len_field`) are public for code that rewrites models (e.g. inlining verified
external data for an engine that has no in-memory external-data call).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Wire types
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MAX_NESTING = 16  # graphs inside graphs (If/Loop bodies); far beyond any real model

# AttributeProto.AttributeType
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR, ATTR_GRAPH = 1, 2, 3, 4, 5
ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS, ATTR_TENSORS, ATTR_GRAPHS = 6, 7, 8, 9, 10
ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS = 11, 12


class WireError(ValueError):
    """Bytes that are not a well-formed ONNX message (as this reader understands one)."""


# ---- the wire format ------------------------------------------------------------------------


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(unsigned value, next position) of the varint at ``pos``; at most 10 bytes."""
    value = shift = 0
    end = min(len(buf), pos + 10)
    while pos < end:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise WireError("truncated or over-long varint")


def signed64(value: int) -> int:
    """A varint read as protobuf's int64/int32 (negative numbers are 10-byte two's complement)."""
    if value >= 1 << 64:
        raise WireError(f"varint {value} does not fit in 64 bits")
    return value - (1 << 64) if value >= 1 << 63 else value


def encode_varint(value: int) -> bytes:
    """The varint encoding of ``value`` (>= 0; for negative int64 pass ``value + 2**64``)."""
    if value < 0:
        raise ValueError("encode_varint takes a non-negative value")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``payload``."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, Any, memoryview]]:
    """(field number, wire type, value, the field's raw bytes) of each field of one message.

    The value is an int for VARINT, a memoryview of the payload otherwise."""
    view = memoryview(buf)
    pos, size = 0, len(view)
    while pos < size:
        start = pos
        key, pos = read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: Any
        if wire == VARINT:
            value, pos = read_varint(view, pos)
        elif wire == LEN:
            length, pos = read_varint(view, pos)
            if length > size - pos:
                raise WireError(f"field {number} is truncated")
            value, pos = view[pos : pos + length], pos + length
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if width > size - pos:
                raise WireError(f"field {number} is truncated")
            value, pos = view[pos : pos + width], pos + width
        else:
            raise WireError(f"field {number} has wire type {wire} (groups are not ONNX)")
        yield number, wire, value, view[start:pos]


# ---- a small schema: which fields of which message this reader needs ------------------------

# Kinds of field: scalars, and messages by their schema name.
INT, STR, BYTES, FLOAT, COUNT_FIXED32, COUNT_FIXED64, COUNT_VARINT, COUNT_LEN = (
    "int",
    "str",
    "bytes",
    "float",
    "count4",
    "count8",
    "countv",
    "countl",
)
_ONE, _MANY = False, True

SCHEMAS: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Model": {
        1: ("ir_version", INT, _ONE),
        2: ("producer_name", STR, _ONE),
        3: ("producer_version", STR, _ONE),
        4: ("domain", STR, _ONE),
        7: ("graph", "Graph", _ONE),
        8: ("opset_import", "OpsetId", _MANY),
        14: ("metadata_props", "Entry", _MANY),
        20: ("training_info", "TrainingInfo", _MANY),
        25: ("functions", "Function", _MANY),
    },
    "OpsetId": {1: ("domain", STR, _ONE), 2: ("version", INT, _ONE)},
    "Entry": {1: ("key", STR, _ONE), 2: ("value", STR, _ONE)},
    "Graph": {
        1: ("node", "Node", _MANY),
        2: ("name", STR, _ONE),
        5: ("initializer", "Tensor", _MANY),
        11: ("input", "ValueInfo", _MANY),
        12: ("output", "ValueInfo", _MANY),
        13: ("value_info", "ValueInfo", _MANY),
        15: ("sparse_initializer", "SparseTensor", _MANY),
    },
    "Node": {
        1: ("input", STR, _MANY),
        2: ("output", STR, _MANY),
        3: ("name", STR, _ONE),
        4: ("op_type", STR, _ONE),
        5: ("attribute", "Attribute", _MANY),
        7: ("domain", STR, _ONE),
    },
    "Attribute": {
        1: ("name", STR, _ONE),
        2: ("f", FLOAT, _ONE),
        3: ("i", INT, _ONE),
        4: ("s", BYTES, _ONE),
        5: ("t", "Tensor", _ONE),
        6: ("g", "Graph", _ONE),
        7: ("floats", FLOAT, _MANY),
        8: ("ints", INT, _MANY),
        9: ("strings", BYTES, _MANY),
        10: ("tensors", "Tensor", _MANY),
        11: ("graphs", "Graph", _MANY),
        20: ("type", INT, _ONE),
        21: ("ref_attr_name", STR, _ONE),
        22: ("sparse_tensor", "SparseTensor", _ONE),
        23: ("sparse_tensors", "SparseTensor", _MANY),
    },
    "Tensor": {
        1: ("dims", INT, _MANY),
        2: ("data_type", INT, _ONE),
        3: ("segment", BYTES, _ONE),
        4: ("float_data", COUNT_FIXED32, _MANY),
        5: ("int32_data", COUNT_VARINT, _MANY),
        6: ("string_data", COUNT_LEN, _MANY),
        7: ("int64_data", COUNT_VARINT, _MANY),
        8: ("name", STR, _ONE),
        9: ("raw_data", BYTES, _ONE),
        10: ("double_data", COUNT_FIXED64, _MANY),
        11: ("uint64_data", COUNT_VARINT, _MANY),
        13: ("external_data", "Entry", _MANY),
        14: ("data_location", INT, _ONE),
    },
    "SparseTensor": {
        1: ("values", "Tensor", _ONE),
        2: ("indices", "Tensor", _ONE),
        3: ("dims", INT, _MANY),
    },
    "ValueInfo": {1: ("name", STR, _ONE), 2: ("type", "Type", _ONE)},
    "Type": {1: ("tensor_type", "TensorType", _ONE)},
    "TensorType": {1: ("elem_type", INT, _ONE), 2: ("shape", "Shape", _ONE)},
    "Shape": {1: ("dim", "Dimension", _MANY)},
    "Dimension": {1: ("dim_value", INT, _ONE), 2: ("dim_param", STR, _ONE)},
    "Function": {
        1: ("name", STR, _ONE),
        7: ("node", "Node", _MANY),
        10: ("domain", STR, _ONE),
    },
    "TrainingInfo": {1: ("initialization", "Graph", _ONE), 2: ("algorithm", "Graph", _ONE)},
}

_LOW_BYTES = bytes(range(0x80))  # bytes that end a varint
_SCALAR_WIRE = {INT: VARINT, FLOAT: FIXED32, COUNT_FIXED32: FIXED32, COUNT_FIXED64: FIXED64}


def _packed_count(kind: str, payload: memoryview) -> int:
    if kind in (COUNT_FIXED32, COUNT_FIXED64):
        width = 4 if kind == COUNT_FIXED32 else 8
        if len(payload) % width:
            raise WireError("packed field of fixed-size numbers has a partial element")
        return len(payload) // width
    data = bytes(payload)
    if data and data[-1] >= 0x80:
        raise WireError("packed varints end in a truncated varint")
    return len(data) - len(data.translate(None, _LOW_BYTES))  # one end byte per varint


def _packed_varints(payload: memoryview) -> Iterator[int]:
    pos = 0
    while pos < len(payload):
        value, pos = read_varint(payload, pos)
        yield value


def _scalar(kind: str, wire: int, value: Any, what: str) -> Any:
    """One value of a scalar field (a packed repeated field is expanded by the caller)."""
    if kind in (STR, BYTES, COUNT_LEN):
        if wire != LEN:
            raise WireError(f"{what} has wire type {wire}, expected length-delimited")
        if kind == COUNT_LEN:
            return 1
        if kind == BYTES:
            return value
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{what} is not valid UTF-8") from None
    if wire != _SCALAR_WIRE.get(kind, VARINT):
        raise WireError(f"{what} has wire type {wire}")
    if kind == INT:
        return signed64(value)
    if kind == FLOAT:
        return struct.unpack("<f", value)[0]
    return 1  # one element of a counted numeric field


def _parse(buf: memoryview, schema: str, depth: int) -> dict[str, Any]:
    """The known fields of one message: name -> value (repeated: a list; counted: an int)."""
    if depth > MAX_NESTING:
        raise WireError(f"messages nested more than {MAX_NESTING} graphs deep")
    spec = SCHEMAS[schema]
    out: dict[str, Any] = {}
    for number, wire, value, _raw in fields(buf):
        if number not in spec:
            continue  # unknown to this reader; protobuf skips it too
        name, kind, many = spec[number]
        what = f"{schema}.{name}"
        if kind in SCHEMAS:
            if wire != LEN:
                raise WireError(f"{what} has wire type {wire}, expected a message")
            item: Any = _parse(value, kind, depth + (kind == "Graph"))
        elif many and wire == LEN and kind not in (STR, BYTES, COUNT_LEN):
            packed = (
                _packed_count(kind, value)
                if kind.startswith("count")
                else [
                    _scalar(kind, VARINT if kind == INT else FIXED32, v, what)
                    for v in _packed_values(kind, value)
                ]
            )
            if kind.startswith("count"):
                out[name] = out.get(name, 0) + packed
            else:
                out.setdefault(name, []).extend(packed)
            continue
        else:
            item = _scalar(kind, wire, value, what)
        if kind.startswith("count"):
            out[name] = out.get(name, 0) + item
        elif many:
            out.setdefault(name, []).append(item)
        elif name in out:
            raise WireError(f"{what} is given twice (a singular field)")
        else:
            out[name] = item
    return out


def _packed_values(kind: str, payload: memoryview) -> Iterator[Any]:
    if kind == INT:
        yield from _packed_varints(payload)
        return
    if len(payload) % 4:
        raise WireError("packed floats have a partial element")
    for pos in range(0, len(payload), 4):
        yield payload[pos : pos + 4]


# ---- the model, as plain data ---------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """A TensorProto: its shape, type and where its data lies (never the data decoded)."""

    name: str
    dims: tuple[int, ...]
    data_type: int
    data_location: int
    external_data: tuple[tuple[str, str], ...]  # (key, value) entries, in order
    raw_size: int | None  # len(raw_data); None when the field is absent
    typed_count: int  # elements held in float_data, int32_data, ..., string_data
    segmented: bool

    @property
    def elements(self) -> int:
        count = 1
        for d in self.dims:
            count *= d
        return count

    @property
    def is_external(self) -> bool:
        return self.data_location == EXTERNAL


@dataclass(frozen=True)
class SparseTensor:
    values: Tensor | None
    indices: Tensor | None
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Attribute:
    name: str
    type: int
    ref_attr_name: str
    f: float | None
    i: int | None
    s: bytes | None
    floats: tuple[float, ...]
    ints: tuple[int, ...]
    strings: tuple[bytes, ...]
    tensors: tuple[Tensor, ...]  # ``t`` first, then ``tensors``
    graphs: tuple[Graph, ...]  # ``g`` first, then ``graphs``
    sparse_tensors: tuple[SparseTensor, ...]


@dataclass(frozen=True)
class Node:
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class ValueInfo:
    """A declared value: tensor element type and shape (ints fixed, strings symbolic, None
    unknown); ``is_tensor`` False for sequence/map/optional types."""

    name: str
    is_tensor: bool
    elem_type: int | None
    shape: tuple[int | str | None, ...] | None


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    initializers: tuple[Tensor, ...]
    sparse_initializers: tuple[SparseTensor, ...]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    value_info: tuple[ValueInfo, ...]

    def subgraphs(self) -> Iterator[Graph]:
        """The graphs held in this graph's node attributes (If/Loop bodies), recursively."""
        for node in self.nodes:
            for attribute in node.attributes:
                for graph in attribute.graphs:
                    yield graph
                    yield from graph.subgraphs()


@dataclass(frozen=True)
class Function:
    name: str
    domain: str
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Model:
    ir_version: int
    producer_name: str
    producer_version: str
    opset_import: tuple[tuple[str, int], ...]
    graph: Graph
    metadata_props: tuple[tuple[str, str], ...]
    functions: tuple[Function, ...]
    training_graphs: tuple[Graph, ...]  # TrainingInfoProto's initialization/algorithm graphs

    def graphs(self) -> Iterator[Graph]:
        """Every graph the model holds: the main graph, subgraphs, training graphs."""
        for top in (self.graph, *self.training_graphs):
            yield top
            yield from top.subgraphs()

    def all_nodes(self) -> Iterator[Node]:
        for graph in self.graphs():
            yield from graph.nodes
        for function in self.functions:
            yield from function.nodes

    def tensors(self) -> Iterator[Tensor]:
        """Every TensorProto anywhere: initializers, sparse tensors, attribute tensors."""
        for graph in self.graphs():
            yield from graph.initializers
            yield from _sparse_parts(graph.sparse_initializers)
        for node in self.all_nodes():
            for attribute in node.attributes:
                yield from attribute.tensors
                yield from _sparse_parts(attribute.sparse_tensors)


def _sparse_parts(sparse: tuple[SparseTensor, ...]) -> Iterator[Tensor]:
    for s in sparse:
        yield from (t for t in (s.values, s.indices) if t is not None)


def parse_model(data: bytes | memoryview) -> Model:
    """The model in ``data`` (ModelProto bytes); a WireError if it is not a well-formed one."""
    raw = _parse(memoryview(data), "Model", 0)
    if "graph" not in raw:
        raise WireError("the model holds no graph")
    return Model(
        ir_version=raw.get("ir_version", 0),
        producer_name=raw.get("producer_name", ""),
        producer_version=raw.get("producer_version", ""),
        opset_import=tuple(
            (o.get("domain", ""), o.get("version", 0)) for o in _many(raw, "opset_import")
        ),
        graph=_graph(raw["graph"]),
        metadata_props=_entries(raw, "metadata_props"),
        functions=tuple(
            Function(f.get("name", ""), f.get("domain", ""), tuple(map(_node, _many(f, "node"))))
            for f in _many(raw, "functions")
        ),
        training_graphs=tuple(
            _graph(t[key])
            for t in _many(raw, "training_info")
            for key in ("initialization", "algorithm")
            if key in t
        ),
    )


def parse_tensor(data: bytes | memoryview) -> Tensor:
    """One TensorProto's bytes (e.g. an initializer field's payload from :func:`fields`)."""
    return _tensor(_parse(memoryview(data), "Tensor", 0))


def _many(raw: dict[str, Any], key: str) -> list[Any]:
    return raw.get(key, [])


def _entries(raw: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    return tuple((e.get("key", ""), e.get("value", "")) for e in _many(raw, key))


def _graph(raw: dict[str, Any]) -> Graph:
    return Graph(
        name=raw.get("name", ""),
        nodes=tuple(map(_node, _many(raw, "node"))),
        initializers=tuple(map(_tensor, _many(raw, "initializer"))),
        sparse_initializers=tuple(map(_sparse, _many(raw, "sparse_initializer"))),
        inputs=tuple(map(_value_info, _many(raw, "input"))),
        outputs=tuple(map(_value_info, _many(raw, "output"))),
        value_info=tuple(map(_value_info, _many(raw, "value_info"))),
    )


def _node(raw: dict[str, Any]) -> Node:
    return Node(
        op_type=raw.get("op_type", ""),
        domain=raw.get("domain", ""),
        name=raw.get("name", ""),
        inputs=tuple(_many(raw, "input")),
        outputs=tuple(_many(raw, "output")),
        attributes=tuple(map(_attribute, _many(raw, "attribute"))),
    )


def _attribute(raw: dict[str, Any]) -> Attribute:
    return Attribute(
        name=raw.get("name", ""),
        type=raw.get("type", 0),
        ref_attr_name=raw.get("ref_attr_name", ""),
        f=raw.get("f"),
        i=raw.get("i"),
        s=bytes(raw["s"]) if "s" in raw else None,
        floats=tuple(_many(raw, "floats")),
        ints=tuple(_many(raw, "ints")),
        strings=tuple(bytes(s) for s in _many(raw, "strings")),
        tensors=tuple(map(_tensor, ([raw["t"]] if "t" in raw else []) + _many(raw, "tensors"))),
        graphs=tuple(map(_graph, ([raw["g"]] if "g" in raw else []) + _many(raw, "graphs"))),
        sparse_tensors=tuple(
            map(
                _sparse,
                ([raw["sparse_tensor"]] if "sparse_tensor" in raw else [])
                + _many(raw, "sparse_tensors"),
            )
        ),
    )


def _tensor(raw: dict[str, Any]) -> Tensor:
    typed = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
    return Tensor(
        name=raw.get("name", ""),
        dims=tuple(_many(raw, "dims")),
        data_type=raw.get("data_type", 0),
        data_location=raw.get("data_location", 0),
        external_data=_entries(raw, "external_data"),
        raw_size=len(raw["raw_data"]) if "raw_data" in raw else None,
        typed_count=sum(raw.get(key, 0) for key in typed),
        segmented="segment" in raw,
    )


def _sparse(raw: dict[str, Any]) -> SparseTensor:
    return SparseTensor(
        values=_tensor(raw["values"]) if "values" in raw else None,
        indices=_tensor(raw["indices"]) if "indices" in raw else None,
        dims=tuple(_many(raw, "dims")),
    )


def _value_info(raw: dict[str, Any]) -> ValueInfo:
    tensor = raw.get("type", {}).get("tensor_type")
    if tensor is None:
        return ValueInfo(raw.get("name", ""), "type" not in raw, None, None)
    shape = None
    if "shape" in tensor:
        shape = tuple(
            d["dim_value"] if "dim_value" in d else d.get("dim_param")
            for d in _many(tensor["shape"], "dim")
        )
    return ValueInfo(raw.get("name", ""), True, tensor.get("elem_type"), shape)
