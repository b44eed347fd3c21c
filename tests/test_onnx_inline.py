"""Inlining a graph's external data from verified bytes (no onnx in the runtime): the result
holds exactly the tensors onnx itself loads, and every reference the manifest did not
verify is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vae_format import Manifest, read_verified
from vae_runtime import ModelFormatError
from vae_runtime.onnx_inline import inline_external_data, metadata_props

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "artifacts").glob("*/manifest.json"))


def _verified(model_dir: Path, role: str) -> tuple[bytes, dict[str, bytes]]:
    m = Manifest.load(model_dir)
    external = {f: read_verified(m, f) for f in m.external_files(role)}
    return read_verified(m, m.graphs[role]), external


@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_inlined_graph_holds_what_onnx_loads(model_dir: Path, role: str) -> None:
    graph, external = _verified(model_dir, role)
    inlined = onnx.load_from_string(inline_external_data(graph, external, role))
    onnx.checker.check_model(inlined)
    reference = onnx.load(str(model_dir / Manifest.load(model_dir).graphs[role]))
    assert [t.name for t in inlined.graph.initializer] == [
        t.name for t in reference.graph.initializer
    ]
    for got, want in zip(inlined.graph.initializer, reference.graph.initializer, strict=True):
        assert got.data_location == TensorProto.DEFAULT and not got.external_data
        np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(want))
    assert [n.SerializeToString() for n in inlined.graph.node] == [
        n.SerializeToString() for n in reference.graph.node
    ]
    assert metadata_props(graph, role) == {p.key: p.value for p in reference.metadata_props}


def _external_model(location: str, offset: int = 0, length: int = 16, attribute: bool = False
                    ) -> bytes:  # fmt: skip
    """y = x + w with w (4 floats) as external data at ``location``; with ``attribute``, w is
    a Constant node's tensor instead of an initializer."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        w.external_data.add(key=key, value=value)
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    inits = [w]
    if attribute:
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=w))
        inits = []
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits,
    )  # fmt: skip
    return helper.make_model(graph).SerializeToString()


WEIGHTS = np.arange(8, dtype=np.float32).tobytes()


def test_small_model_inlines_at_offset() -> None:
    inlined = onnx.load_from_string(
        inline_external_data(_external_model("w.bin", offset=8), {"w.bin": WEIGHTS}, "m")
    )
    np.testing.assert_array_equal(numpy_helper.to_array(inlined.graph.initializer[0]),
                                  [2, 3, 4, 5])  # fmt: skip


@pytest.mark.parametrize(
    ("location", "offset", "length", "match"),
    [
        ("other.bin", 0, 16, "not one of the verified files"),
        ("../w.bin", 0, 16, "not one of the verified files"),
        ("*/_ORT_MEM_ADDR_/*", 0, 16, "not one of the verified files"),
        ("w.bin", 24, 16, "does not hold"),  # past the end of the file
        ("w.bin", 0, 12, "does not hold"),  # shorter than the tensor
    ],
)
def test_unverified_or_bad_references_are_refused(location, offset, length, match) -> None:
    with pytest.raises(ModelFormatError, match=match):
        inline_external_data(
            _external_model(location, offset, length), {"w.bin": WEIGHTS}, "model.onnx"
        )


def test_reference_outside_the_initializers_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="outside the graph's initializers"):
        inline_external_data(_external_model("w.bin", attribute=True), {"w.bin": WEIGHTS}, "m")


def test_garbage_is_a_format_error() -> None:
    with pytest.raises(ModelFormatError, match="cannot inline"):
        inline_external_data(b"\x3a\xff\xff\xff\xff\x0f", {}, "junk.onnx")
