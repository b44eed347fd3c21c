"""How a float32 graph becomes an int8 graph that ONNX Runtime runs fast (issue 16).

Each choice was measured (1 thread, batch 256, CPU time per image, on an AMD EPYC with
AVX-512 VNNI; figures in docs/performance.md):

* ReLU folded into the producer's output quantization: Relu is quantized as a removable
  activation, so the producer's QuantizeLinear takes the ReLU's range [0, max] and its
  zero point 0 clamps negatives. No DequantizeLinear/QuantizeLinear pair is left around a
  Relu (they cost 15-30% of the old int8 encoder), and the finer scale (no negative half)
  is also more precise.
* A Conv with one input channel (the encoder's conv1) stays float: MLAS has no fast int8
  kernel for K = 16 (1.6 ms vs 0.5 ms float at batch 256).
* Concat -> Relu (the phase-form decoder's first layer): the four phase Convs are quantized
  with the same [0, max] range as the Relu after their Concat, so the ReLU applies at each
  Conv's output and the Concat joins tensors of one scale.
* The phase decoder's last layer (a grouped 1x1 Conv of per-tap products, then a 3x3 Conv
  with 0/1 weights that sums them) is composed into one exact 3x3 Conv, so int8 no longer
  rounds the per-tap products (decoder ELBO change 0.72 -> 0.28 nats on mnist-conv-z20),
  at the same speed. Only where the last layer is quantized: in float the composed kernel
  is slower than the two Convs.
* Per-channel int8 weights, uint8 activations, MinMax calibration, QDQ format, as before.

Recipes, fastest first: "int8" (everything above), "int8-float-last" (the final layer in
float), "int8-float-outputs" (int8 weights and inputs, float outputs: precise, not fast).
ORT needs graph optimization "extended" at least to fuse the QDQ nodes; "all" adds NCHWc
for the float conv1 (measured ~10% faster on the encoder). See SESSION.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Relu: folded into its producer (QDQRemovableActivation); Concat: quantized so the chain
# Conv -> Concat -> (folded) Relu -> Conv stays int8.
FOLDED_OPS = ("Relu", "Concat")
RECIPES: tuple[str, ...] = ("int8", "int8-float-last", "int8-float-outputs")
# What the int8 graphs need from an ONNX Runtime session (recorded in the manifest).
SESSION = {"min_optimization": "extended", "optimization": "all"}


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray, batch: int = 200) -> None:
        self._it = iter([{name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def last_layer(model: onnx.ModelProto) -> list[str]:
    """The quantizable nodes after the graph's last ReLU: the final layer, which makes the
    decoder's logits (two Convs in the phase-form decoder, see phase.py) or the encoder's
    heads; the last such node where the graph has no ReLU."""
    nodes = list(model.graph.node)  # topologically sorted, as ONNX requires
    relus = [i for i, n in enumerate(nodes) if n.op_type == "Relu"]
    after = nodes[relus[-1] + 1 :] if relus else nodes
    names = [n.name for n in after if n.op_type in QUANTIZED_OPS]
    return names or [n.name for n in nodes if n.op_type in QUANTIZED_OPS][-1:]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if tensor in n.input]


def compose_pointwise_convs(model: onnx.ModelProto) -> int:
    """Compose each bias-free (grouped) 1x1 Conv whose only consumer is a Conv into that
    Conv, in place (exact: both are linear); returns how many. Weights must be inline."""
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    composed = 0
    for first in list(model.graph.node):
        a = _attrs(first)
        if (first.op_type != "Conv" or a.get("kernel_shape") != [1, 1] or len(first.input) != 2
                or first.input[1] not in inits or first.output[0] in outputs
                or any(s != 1 for s in a.get("strides", [1, 1]))
                or any(a.get("pads", [0, 0, 0, 0]))):  # fmt: skip
            continue
        users = _consumers(model, first.output[0])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[1] not in inits:
            continue
        second = users[0]
        if _attrs(second).get("group", 1) != 1:
            continue
        taps = numpy_helper.to_array(inits[first.input[1]])[:, :, 0, 0].astype(np.float64)
        kernel = numpy_helper.to_array(inits[second.input[1]]).astype(np.float64)
        groups = int(a.get("group", 1))
        per_in, per_out = taps.shape[1], taps.shape[0] // groups
        weight = np.zeros((kernel.shape[0], per_in * groups, *kernel.shape[2:]))
        for g in range(groups):
            rows = slice(g * per_out, (g + 1) * per_out)
            weight[:, g * per_in : (g + 1) * per_in] = np.einsum(
                "omhw,mi->oihw", kernel[:, rows], taps[rows]
            )
        name = f"{second.input[1]}.composed"
        model.graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), name))
        second.input[0], second.input[1] = first.input[0], name
        model.graph.node.remove(first)
        composed += 1
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)
    return composed


def float_convs(model: onnx.ModelProto) -> list[str]:
    """Convs with a single input channel: kept float (see the module docstring)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [
        n.name for n in model.graph.node
        if n.op_type == "Conv" and n.input[1] in inits and inits[n.input[1]].dims[1] == 1
        and _attrs(n).get("group", 1) == 1
    ]  # fmt: skip


def _relu_ranges(model: onnx.ModelProto, name: str, data: np.ndarray) -> dict[str, Any]:
    """TensorQuantOverrides giving each Concat feeding a Relu, and the Concat's inputs, the
    Relu's calibrated range [0, max]."""
    pairs = []
    for cat in (n for n in model.graph.node if n.op_type == "Concat"):
        users = _consumers(model, cat.output[0])
        if len(users) == 1 and users[0].op_type == "Relu":
            pairs.append((cat, users[0].output[0]))
    if not pairs:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for _, relu_out in pairs:
        probe.graph.output.append(helper.make_empty_tensor_value_info(relu_out))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [out for _, out in pairs]
    highs = np.zeros(len(wanted))
    for i in range(0, len(data), 500):
        got = session.run(wanted, {name: data[i : i + 500]})
        highs = np.maximum(highs, [float(g.max()) for g in got])
    overrides: dict[str, Any] = {}
    for (cat, _), high in zip(pairs, highs, strict=True):
        span = [{"rmin": np.float32(0.0), "rmax": np.float32(high)}]
        for tensor in (*cat.input, cat.output[0]):
            overrides[tensor] = span
    return overrides


def prepare(model: onnx.ModelProto, recipe: str) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` (weights inline) rewritten for ``recipe`` before quantization,
    and how many pointwise Convs were composed (only where the last layer is int8)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out, compose_pointwise_convs(out) if recipe == "int8" else 0


def quantize_graph(src: Path, dst: Path, name: str, data: np.ndarray, recipe: str
                   ) -> dict[str, Any]:  # fmt: skip
    """Write the int8 graph of ``src`` (a float32 graph; external data beside it) for
    ``recipe`` to ``dst``, calibrated on ``data`` fed as input ``name``. Returns what was
    done: the nodes kept float, and how many pointwise Convs were composed."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    model, composed = prepare(onnx.load(str(src)), recipe)
    exclude = float_convs(model)
    extra: dict[str, Any] = {}
    if recipe == "int8-float-last":
        exclude += [n for n in last_layer(model) if n not in exclude]
    if recipe == "int8-float-outputs":
        extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
    with tempfile.TemporaryDirectory(prefix="vae-int8-recipe-") as tmp:
        staged = Path(tmp) / "float.onnx"
        onnx.save(model, str(staged))
        overrides = _relu_ranges(model, name, data)
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        quantize_static(
            str(staged), str(dst), _Batches(name, data), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*QUANTIZED_OPS, *FOLDED_OPS], per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
            extra_options=extra,
        )  # fmt: skip
    return {"float_nodes": sorted(exclude), "composed_convs": composed}


def relus_between_qdq(model: onnx.ModelProto) -> list[str]:
    """Relu nodes fed by a DequantizeLinear: the pattern the recipe removes (for tests)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name for n in model.graph.node
        if n.op_type == "Relu" and getattr(producer.get(n.input[0]), "op_type", "")
        == "DequantizeLinear"
    ]  # fmt: skip


def float_ops(model: onnx.ModelProto, ops: Sequence[str] = QUANTIZED_OPS) -> list[str]:
    """Nodes of ``ops`` whose weight is not fed by a DequantizeLinear (they run in float)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name for n in model.graph.node
        if n.op_type in ops and len(n.input) > 1
        and getattr(producer.get(n.input[1]), "op_type", "") != "DequantizeLinear"
    ]  # fmt: skip
