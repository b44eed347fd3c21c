"""The int8 recipe's structure: what it folds, composes and keeps float (int8_recipe.py).
Its budget is held by test_quantize.py (every shipped int8 variant, and a fresh export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from vae_export import int8_recipe as r
from vae_export.validate import ort_session

RNG = np.random.default_rng(0)
IMAGES = RNG.random((64, 1, 28, 28), dtype=np.float32)


def _latents(n: int = 64) -> np.ndarray:
    return RNG.standard_normal((n, 20)).astype(np.float32)


@pytest.fixture(scope="module")
def conv(model_dir_factory) -> Path:
    return model_dir_factory("conv", 20)


def _quantized(src: Path, tmp: Path, recipe: str) -> tuple[onnx.ModelProto, dict]:
    role, data = ("encoder", IMAGES) if src.name.startswith("encoder") else ("decoder", _latents())
    facts = r.quantize_graph(src, tmp / f"{role}.{recipe}.onnx", "x" if role == "encoder" else "z",
                             data, recipe)  # fmt: skip
    return onnx.load(str(tmp / f"{role}.{recipe}.onnx")), facts


def test_composing_the_pointwise_conv_is_exact(conv: Path) -> None:
    model = onnx.load(str(conv / "decoder.onnx"))
    before = model.SerializeToString()
    assert r.compose_pointwise_convs(model) == 1
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert not any(
        dict((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute)["kernel_shape"]
        == [1, 1]
        for n in convs
    )
    z = _latents(256)
    (want,) = ort_session(before).run(None, {"z": z})
    (got,) = ort_session(model.SerializeToString()).run(None, {"z": z})
    assert np.abs(got - want).max() <= 1e-5
    assert r.compose_pointwise_convs(model) == 0  # nothing left to compose


def test_int8_folds_every_relu_and_keeps_only_the_one_channel_conv_float(conv, tmp_path) -> None:
    enc, facts = _quantized(conv / "encoder.onnx", tmp_path, "int8")
    first_conv = next(n.name for n in enc.graph.node if n.op_type == "Conv")
    assert facts["float_nodes"] == [first_conv]
    assert r.float_ops(enc) == [first_conv]
    assert r.relus_between_qdq(enc) == []
    dec, facts = _quantized(conv / "decoder.onnx", tmp_path, "int8")
    assert facts == {"float_nodes": [], "composed_convs": 1, "merged_phase_convs": 1}
    assert r.float_ops(dec) == []
    assert r.relus_between_qdq(dec) == []
    assert [n.op_type for n in dec.graph.node].count("Relu") == 0  # all folded


def test_the_old_recipe_left_qdq_pairs_around_relu(conv, tmp_path) -> None:
    """The check above can fail: plain QDQ quantization of the same graph has the pattern."""
    quantize_static(
        str(conv / "encoder.onnx"), str(tmp_path / "old.onnx"), r._Batches("x", IMAGES),
        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(r.QUANTIZED_OPS),
        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
    )  # fmt: skip
    assert len(r.relus_between_qdq(onnx.load(str(tmp_path / "old.onnx")))) == 3


def test_merging_the_phase_convs_is_exact(conv: Path) -> None:
    model = onnx.load(str(conv / "decoder.onnx"))
    before = model.SerializeToString()
    assert r.compose_pointwise_convs(model) == 1
    assert r.merge_phase_convs(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Concat" not in ops and ops.count("Conv") == 2 and ops.count("Mul") == 1
    kernels = {n.name: r._attrs(n)["kernel_shape"] for n in model.graph.node if n.op_type == "Conv"}
    assert kernels == {r.MERGED_CONV: [2, 2], r.LAST_CONV: [2, 2]}
    z = _latents(256)
    (want,) = ort_session(before).run(None, {"z": z})
    (got,) = ort_session(model.SerializeToString()).run(None, {"z": z})
    assert np.abs(got - want).max() <= 1e-5
    assert r.merge_phase_convs(model) == 0  # nothing left to merge


def test_a_last_layer_reading_outside_the_phase_windows_is_not_merged() -> None:
    shifts = [(0, 0), (0, 1), (1, 0), (1, 1)]
    sparse = np.zeros((16, 8, 3, 3), np.float32)
    sparse[:, 0:2, 1:, 1:] = 1.0  # phase (0, 0) reads taps 1..2: inside its window
    assert r._last_on_merged_grid(sparse, shifts) is not None
    sparse[:, 0, 0, 0] = 1.0  # ... and tap 0, which the merged grid cannot reach
    assert r._last_on_merged_grid(sparse, shifts) is None


def test_the_int8_border_mask_is_a_uint8_min(conv, tmp_path) -> None:
    dec, _ = _quantized(conv / "decoder.onnx", tmp_path, "int8")
    inits = {t.name: numpy_helper.to_array(t) for t in dec.graph.initializer}
    producer = {o: n for n in dec.graph.node for o in n.output}
    ops = [n.op_type for n in dec.graph.node]
    assert "Concat" not in ops and "Mul" not in ops
    (mask,) = [n for n in dec.graph.node if n.op_type == "Min"]
    bytes_ = inits[mask.input[1]]
    assert bytes_.dtype == np.uint8 and set(np.unique(bytes_)) == {0, 255}
    assert producer[mask.input[0]].op_type == "QuantizeLinear"  # the merged Conv's output
    q = producer[mask.input[0]]
    (dq,) = [n for n in dec.graph.node if mask.output[0] in n.input]
    assert dq.op_type == "DequantizeLinear" and dq.input[1:] == q.input[1:]
    assert int(inits[q.input[2]]) == 0  # the ReLU's range: Min with 0 gives exactly 0.0


def test_concat_inputs_share_the_relu_range(conv, tmp_path) -> None:
    """Where the phase Convs stay apart (the last layer in float), their Concat feeds the
    ReLU's range to each of them."""
    dec, _ = _quantized(conv / "decoder.onnx", tmp_path, "int8-float-last")
    inits = {t.name: numpy_helper.to_array(t) for t in dec.graph.initializer}
    producer = {o: n for n in dec.graph.node for o in n.output}
    (cat,) = [n for n in dec.graph.node if n.op_type == "Concat"]
    params = set()
    for name in cat.input:  # each input: DequantizeLinear(QuantizeLinear(conv output))
        dq = producer[name]
        assert dq.op_type == "DequantizeLinear"
        params.add((float(inits[dq.input[1]]), int(inits[dq.input[2]])))
    assert len(params) == 1
    ((scale, zero_point),) = params
    assert zero_point == 0 and scale > 0  # [0, max]: the ReLU applies at each Conv's output


def test_float_last_keeps_the_two_last_convs_float_and_uncomposed(conv, tmp_path) -> None:
    dec, facts = _quantized(conv / "decoder.onnx", tmp_path, "int8-float-last")
    last = r.last_layer(onnx.load(str(conv / "decoder.onnx"), load_external_data=False))
    assert facts == {"float_nodes": sorted(last), "composed_convs": 0, "merged_phase_convs": 0}
    assert sorted(r.float_ops(dec)) == sorted(last)


def test_unknown_recipe_is_refused(conv, tmp_path) -> None:
    with pytest.raises(ValueError, match="recipe must be one of"):
        r.quantize_graph(conv / "encoder.onnx", tmp_path / "x.onnx", "x", IMAGES, "int4")
