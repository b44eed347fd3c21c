"""vae_format.onnx_wire, the runtime's protobuf reader of ONNX models (no onnx in the
runtime), checked against onnx itself: on every shipped graph of every variant, on the
exported forms of each architecture, on hand-made graphs using the corners of the format
(subgraphs, sparse and attribute tensors, functions, packed and unpacked fields), and on
malformed bytes, which it must refuse rather than read differently from an engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vae_format import Manifest
from vae_format.onnx_wire import (
    MAX_NESTING,
    Model,
    Tensor,
    WireError,
    encode_varint,
    fields,
    len_field,
    parse_model,
    read_varint,
    signed64,
    varint_field,
)

onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "artifacts").glob("*/manifest.json"))
SHIPPED_GRAPHS = sorted(
    {
        d / rel
        for d in SHIPPED
        for v in (None, *Manifest.load(d).variants)
        for rel in Manifest.load(d).graph_files(v).values()
    }
)


# ---- what onnx says a model holds, in the reader's terms -------------------------------------


def _tensor_facts(t: TensorProto) -> tuple:
    typed = (
        len(t.float_data)
        + len(t.int32_data)
        + len(t.string_data)
        + len(t.int64_data)
        + len(t.double_data)
        + len(t.uint64_data)
    )
    raw = len(t.raw_data) if t.HasField("raw_data") else None
    external = tuple((e.key, e.value) for e in t.external_data)
    return (t.name, tuple(t.dims), t.data_type, t.data_location, external, raw, typed)


def _ours(t: Tensor) -> tuple:
    return (
        t.name,
        t.dims,
        t.data_type,
        t.data_location,
        t.external_data,
        t.raw_size,
        t.typed_count,
    )


def _value_info(v: onnx.ValueInfoProto) -> tuple:
    if not v.type.HasField("tensor_type"):
        return (v.name, None, None)
    tt = v.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value
            if d.HasField("dim_value")
            else (d.dim_param if d.HasField("dim_param") else None)
            for d in tt.shape.dim
        )
    return (v.name, tt.elem_type, shape)


def _attribute(a: AttributeProto) -> tuple:
    ints = tuple(a.ints) + ((a.i,) if a.HasField("i") else ())
    floats = tuple(np.float32(f) for f in a.floats) + (
        (np.float32(a.f),) if a.HasField("f") else ()
    )
    tensors = ([a.t] if a.HasField("t") else []) + list(a.tensors)
    return (
        a.name,
        a.type,
        ints,
        floats,
        a.s if a.HasField("s") else None,
        tuple(a.strings),
        tuple(_tensor_facts(t) for t in tensors),
        len(a.graphs) + a.HasField("g"),
    )


def _our_attribute(a) -> tuple:
    ints = (*a.ints, *(() if a.i is None else (a.i,)))
    floats = tuple(np.float32(f) for f in (*a.floats, *(() if a.f is None else (a.f,))))
    return (
        a.name,
        a.type,
        ints,
        floats,
        a.s,
        a.strings,
        tuple(_ours(t) for t in a.tensors),
        len(a.graphs),
    )


def assert_same_graph(ours, graph: onnx.GraphProto) -> None:
    assert ours.name == graph.name
    assert [_ours(t) for t in ours.initializers] == [_tensor_facts(t) for t in graph.initializer]
    for side in ("inputs", "outputs", "value_info"):
        theirs = getattr(graph, side.rstrip("s") if side != "value_info" else side)
        assert [(v.name, v.elem_type, v.shape) for v in getattr(ours, side)] == [
            _value_info(v) for v in theirs
        ]
    assert len(ours.nodes) == len(graph.node)
    for mine, node in zip(ours.nodes, graph.node, strict=True):
        assert (mine.op_type, mine.domain, mine.name) == (node.op_type, node.domain, node.name)
        assert (mine.inputs, mine.outputs) == (tuple(node.input), tuple(node.output))
        assert [_our_attribute(a) for a in mine.attributes] == [
            _attribute(a) for a in node.attribute
        ]
        subgraphs = [
            g for a in node.attribute for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)
        ]
        for sub_ours, sub in zip(
            (g for a in mine.attributes for g in a.graphs), subgraphs, strict=True
        ):
            assert_same_graph(sub_ours, sub)


def assert_same_model(data: bytes) -> Model:
    ours = parse_model(data)
    model = onnx.load_from_string(data)
    assert ours.ir_version == model.ir_version
    assert ours.producer_name == model.producer_name
    assert ours.opset_import == tuple((o.domain, o.version) for o in model.opset_import)
    assert ours.metadata_props == tuple((p.key, p.value) for p in model.metadata_props)
    assert len(ours.functions) == len(model.functions)
    assert_same_graph(ours.graph, model.graph)
    return ours


# ---- every real graph ------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED_GRAPHS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_agrees_with_onnx_on_every_shipped_graph(path: Path) -> None:
    model = assert_same_model(path.read_bytes())
    assert model.graph.nodes and model.graph.initializers  # a real graph, really read


@pytest.mark.parametrize(
    ("arch", "latent", "form", "self_contained"),
    [("conv", 20, "phase", False), ("conv", 20, "convtranspose", False), ("mlp", 2, "phase", True)],
)
def test_reader_agrees_with_onnx_on_exported_forms(
    model_dir_factory, arch: str, latent: int, form: str, self_contained: bool
) -> None:
    d = model_dir_factory(arch, latent, decoder_form=form, self_contained=self_contained)
    for rel in Manifest.load(d).graphs.values():
        model = assert_same_model((d / rel).read_bytes())
        assert any(t.is_external for t in model.tensors()) != self_contained


# ---- the corners of the format, made with onnx ----------------------------------------------


def _external(name: str, location: str) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[2])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        t.external_data.add(key=key, value=value)
    return t


def corner_model() -> bytes:
    """Subgraphs (If with an initializer in a branch, nested twice), a Constant node's tensor,
    a sparse initializer, typed-field data, negative and float attributes, a local
    function, unpacked dims and a training-info graph."""
    inner = helper.make_graph(
        [helper.make_node("Identity", ["deep"], ["o2"])],
        "inner",
        [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2])],
        [_external("deep", "d.bin")],
    )
    then = helper.make_graph(
        [helper.make_node("If", ["c"], ["o1"], then_branch=inner, else_branch=inner)],
        "then",
        [],
        [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2])],
        [_external("t", "t.bin")],
    )
    const = helper.make_node("Constant", [], ["k"], value=_external("kv", "k.bin"), name="const")
    cast = helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT, name="cast")
    pads = helper.make_node("Pad", ["x", "p"], ["xp"], mode="constant", name="pad")
    lrn = helper.make_node("LRN", ["x"], ["xl"], alpha=1e-4, beta=0.75, size=3, name="lrn")
    neg = helper.make_node("Concat", ["x", "x"], ["xx"], axis=-1, name="neg_axis")
    branch = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then, name="if")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5], np.float32), "sv"),
        numpy_helper.from_array(np.array([3], np.int64), "si"),
        [5],
    )
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])  # float_data
    ints = helper.make_tensor("p", TensorProto.INT64, [2], [0, -7])  # int64_data, negative
    graph = helper.make_graph(
        [const, cast, pads, lrn, neg, branch],
        "corners",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, "M", 7])],
        [typed, ints, _external("top", "w.bin")],
        sparse_initializer=[sparse],
    )
    fn = helper.make_function(
        "local",
        "fn",
        ["a"],
        ["b"],
        [helper.make_node("Relu", ["a"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
        functions=[fn],
    )
    model.training_info.add().algorithm.CopyFrom(helper.make_graph([], "train", [], []))
    helper.set_model_props(model, {"vae_onnx.role": "encoder", "other": "ü"})
    return model.SerializeToString()


def test_reader_finds_every_corner_onnx_finds() -> None:
    data = corner_model()
    model = assert_same_model(data)
    names = {t.name for t in model.tensors()}
    # tensors anywhere: initializers, a Constant's value, both branches' nested graphs, sparse
    assert {"top", "typed", "p", "kv", "t", "deep", "sv", "si"} <= names
    assert {t.name for t in model.tensors() if t.is_external} == {"top", "kv", "t", "deep"}
    assert [t.typed_count for t in model.graph.initializers[:2]] == [3, 2]
    assert [f.name for f in model.functions] == ["fn"] and len(model.training_graphs) == 1
    assert len(list(model.graphs())) == 1 + 1 + 2 * (1 + 2)  # main, training, If(then(If)) x2
    attrs = {a.name: a for n in model.graph.nodes for a in n.attributes}
    assert attrs["axis"].i == -1 and attrs["alpha"].f == pytest.approx(1e-4)


def test_unpacked_repeated_fields_read_as_packed_ones() -> None:
    """proto2 writers may emit repeated ints one field each instead of packed."""
    dims = varint_field(1, 3) + varint_field(1, 4)  # TensorProto.dims twice, unpacked
    tensor = (
        dims + varint_field(2, TensorProto.FLOAT) + len_field(8, b"w") + len_field(9, bytes(48))
    )
    graph = len_field(5, tensor)
    model = parse_model(varint_field(1, 8) + len_field(7, graph))
    assert model.graph.initializers[0].dims == (3, 4)
    assert model.graph.initializers[0].raw_size == 48


def test_varints() -> None:
    for value in (0, 1, 127, 128, 300, 2**63 - 1, 2**64 - 1):
        assert read_varint(encode_varint(value), 0) == (value, len(encode_varint(value)))
    assert signed64(2**64 - 7) == -7
    with pytest.raises(WireError, match="over-long"):
        read_varint(b"\xff" * 11, 0)
    with pytest.raises(WireError, match="truncated"):
        read_varint(b"\x80\x80", 0)


# ---- bytes the reader must refuse ------------------------------------------------------------


def _minimal() -> tuple[bytes, bytes]:
    graph = len_field(1, len_field(4, b"Relu") + len_field(1, b"x") + len_field(2, b"y"))
    return varint_field(1, 8), graph


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x3a\xff\xff\xff\xff\x0f", "truncated"),  # graph field longer than the bytes
        (varint_field(1, 8) + b"\x0b", "wire type 3"),  # a group
        (varint_field(1, 8), "no graph"),
        (varint_field(1, 8) + len_field(7, b"") + len_field(7, b""), "given twice"),
        (len_field(1, b"8") + len_field(7, b""), "wire type 2"),  # ir_version as bytes
        (len_field(7, len_field(2, b"\xff\xfe")), "UTF-8"),  # graph name
        (len_field(7, len_field(5, varint_field(1, 2) + b"\x0d\x00")), "truncated"),
        (len_field(7, len_field(1, len_field(4, b"A") + len_field(4, b"B"))), "given twice"),
        (b"\x00\x00", "field number 0"),
    ],
)
def test_malformed_bytes_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse_model(data)


def test_a_graph_given_twice_is_refused_not_merged() -> None:
    """protobuf merges a repeated singular message (onnx would see both graphs' nodes); a
    reader taking one of them could miss an initializer an engine reads."""
    head, graph = _minimal()
    hidden = len_field(5, len_field(8, b"hidden") + varint_field(14, 1))
    data = head + len_field(7, graph) + len_field(7, hidden)
    assert [t.name for t in onnx.load_from_string(data).graph.initializer] == ["hidden"]
    with pytest.raises(WireError, match=r"Model\.graph is given twice"):
        parse_model(data)


def test_graphs_nested_too_deep_are_refused() -> None:
    graph = b""
    for _ in range(MAX_NESTING + 2):
        attr = len_field(1, b"then_branch") + varint_field(20, 5) + len_field(6, graph)
        graph = len_field(1, len_field(4, b"If") + len_field(5, attr))
    with pytest.raises(WireError, match="nested"):
        parse_model(varint_field(1, 8) + len_field(7, graph))


def test_fields_yield_raw_bytes_that_rebuild_the_message() -> None:
    data = (SHIPPED[0] / "encoder.onnx").read_bytes()
    assert b"".join(bytes(raw) for *_, raw in fields(data)) == data
