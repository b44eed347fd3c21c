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
* The phase decoder's four 2x2 Convs, their Concat and the composed 3x3 last layer become
  one 2x2 Conv padded on every side (its 8x8 output holds each phase shifted by its
  padding), the ReLU, a border mask and a 2x2 Conv (merge_phase_convs): no Concat (which
  ORT ran as one 32-byte copy per pixel and phase) and 2.25x less arithmetic in the last
  layer, whose 3x3 kernel was mostly zero taps. Exact in float; in int8 the mask is a Min
  of the uint8 tensor with 0 or 255 (mask_as_min), 4x cheaper than a quantized Mul. ORT
  int8 decoder 64k -> 78k images per CPU-second at batch 256 (same ELBO change to 4
  decimals: the same quantized arithmetic).
* Per-channel int8 weights, uint8 activations, QDQ format, as before. Activation ranges
  from the 0.001st to the 99.999th percentile of the calibration data instead of its min
  and max: one extreme calibration image no longer coarsens every other image's steps
  (mnist-conv-z2's logvar on single test images: mean abs 0.082 -> 0.025 from PyTorch).

Recipes, fastest first: "int8" (everything above), "int8-float-last" (the final layer in
float), "int8-float-outputs" (int8 weights and inputs, float outputs: precise, not fast).
ORT needs graph optimization "extended" at least to fuse the QDQ nodes; "all" adds NCHWc
for the float conv1 (measured ~10% faster on the encoder). See SESSION.
"""

from __future__ import annotations

import contextlib
import io
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
# Conv -> Concat -> (folded) Relu -> Conv stays int8. Mul too where the graph holds the
# merged phase grid's border mask (a uint8 Min after quantization, mask_as_min).
FOLDED_OPS = ("Relu", "Concat")
RECIPES: tuple[str, ...] = ("int8", "int8-float-last", "int8-float-outputs")
CALIBRATION_PERCENTILE = 99.999  # activation ranges: this percentile and its mirror
# What the int8 graphs need from an ONNX Runtime session (recorded in the manifest).
SESSION = {"min_optimization": "extended", "optimization": "all"}


class _Batches(CalibrationDataReader):
    """The calibration data as one batch: ORT's percentile collector stacks each tensor's
    per-batch outputs, which fails on a shorter last batch (and keeps them all anyway)."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        self._it = iter([{name: data}])

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


def prepare(model: onnx.ModelProto, recipe: str) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of ``model`` (weights inline) rewritten for ``recipe`` before quantization,
    and what was rewritten: pointwise Convs composed and phase Convs merged (only where
    the last layer is int8)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if recipe != "int8":
        return out, {"composed_convs": 0, "merged_phase_convs": 0}
    composed = compose_pointwise_convs(out)
    return out, {"composed_convs": composed, "merged_phase_convs": merge_phase_convs(out)}


# ---- the phase decoder's first layer merged, its last layer on the merged grid --------------

MERGED_CONV, BORDER_MASK, LAST_CONV = "phase_merged_conv", "phase_border_mask", "phase_last_conv"


def _phase_shift(
    conv: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> tuple[int, int] | None:
    """(row, column) shift of a phase Conv's output on the merged grid: 1 where the Conv pads
    after rather than before. None if ``conv`` is not a bias-carrying 2x2 phase Conv."""
    a = _attrs(conv)
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if (a.get("kernel_shape") != [2, 2] or a.get("group", 1) != 1 or len(conv.input) != 3
            or any(s != 1 for s in a.get("strides", [1, 1]))
            or any(d != 1 for d in a.get("dilations", [1, 1]))
            or conv.input[1] not in inits or conv.input[2] not in inits
            or pads[0] + pads[2] != 1 or pads[1] + pads[3] != 1):  # fmt: skip
        return None
    return 1 - pads[0], 1 - pads[1]


def _spatial(model: onnx.ModelProto, tensor: str) -> tuple[int, int] | None:
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        if info.name == tensor:
            dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
            return (dims[2], dims[3]) if len(dims) == 4 and all(dims[2:]) else None
    return None


def merge_phase_convs(model: onnx.ModelProto) -> int:
    """Rewrite phase Convs -> Concat -> Relu -> 3x3 Conv (the composed last layer, see
    compose_pointwise_convs) in place, exactly, as: one 2x2 Conv with padding 1 on every
    side -> Relu -> Mul by a 0/1 border mask -> 2x2 Conv without padding. Returns how
    many such layers were merged (0 or 1).

    Phase (a, b) reads input rows i-1, i (padding before) or i, i+1 (after); the merged
    Conv's (H+1, W+1) output holds it at rows shifted by 0 or 1. Read on that grid the last
    layer's taps of every phase fall in one 2x2 window, where on the 7x7 grid they spread
    over 3x3. The row and column each phase's shifted window adds at the border are not
    part of the phase (the merged Conv reads the padding there), so the mask zeroes them.
    """
    inits = {t.name: t for t in model.graph.initializer}
    for cat in (n for n in model.graph.node if n.op_type == "Concat"):
        producer = {o: n for n in model.graph.node for o in n.output}
        convs = [producer.get(t) for t in cat.input]
        users = _consumers(model, cat.output[0])
        if (_attrs(cat).get("axis") != 1 or len(convs) != 4 or len(users) != 1
                or users[0].op_type != "Relu"
                or any(c is None or c.op_type != "Conv" for c in convs)):  # fmt: skip
            continue
        shifts = [_phase_shift(c, inits) for c in convs]  # type: ignore[arg-type]
        relu = users[0]
        lasts = _consumers(model, relu.output[0])
        if (None in shifts or len(set(shifts)) != 4 or len({c.input[0] for c in convs}) != 1
                or len(lasts) != 1 or lasts[0].op_type != "Conv"
                or lasts[0].input[1] not in inits):  # fmt: skip
            continue
        last = lasts[0]
        la = _attrs(last)
        size = _spatial(model, cat.output[0])
        if (la.get("kernel_shape") != [3, 3] or la.get("pads") != [1, 1, 1, 1]
                or la.get("group", 1) != 1 or size is None):  # fmt: skip
            continue
        kernel = _last_on_merged_grid(numpy_helper.to_array(inits[last.input[1]]), shifts)
        if kernel is None:
            continue
        _merge(model, convs, cat, relu, last, shifts, kernel, size)  # type: ignore[arg-type]
        return 1
    return 0


def _last_on_merged_grid(kernel3: np.ndarray, shifts: list[tuple[int, int]]) -> np.ndarray | None:
    """The 3x3 last-layer kernel as a 2x2 kernel on the merged grid, or None where a phase
    has a non-zero tap outside its 2x2 window."""
    per = kernel3.shape[1] // len(shifts)
    kernel2 = np.zeros((kernel3.shape[0], kernel3.shape[1], 2, 2), kernel3.dtype)
    for g, (sh, sw) in enumerate(shifts):
        block = kernel3[:, g * per : (g + 1) * per]
        for kh, kw in np.ndindex(3, 3):
            th, tw = kh - 1 + sh, kw - 1 + sw
            if 0 <= th < 2 and 0 <= tw < 2:
                kernel2[:, g * per : (g + 1) * per, th, tw] = block[:, :, kh, kw]
            elif block[:, :, kh, kw].any():
                return None
    return kernel2


def _merge(model: onnx.ModelProto, convs: list[onnx.NodeProto], cat: onnx.NodeProto,
           relu: onnx.NodeProto, last: onnx.NodeProto, shifts: list[tuple[int, int]],
           kernel2: np.ndarray, size: tuple[int, int]) -> None:  # fmt: skip
    inits = {t.name: t for t in model.graph.initializer}
    weight = np.concatenate([numpy_helper.to_array(inits[c.input[1]]) for c in convs])
    bias = np.concatenate([numpy_helper.to_array(inits[c.input[2]]) for c in convs])
    per = weight.shape[0] // len(convs)
    h, w = size
    mask = np.zeros((1, weight.shape[0], h + 1, w + 1), np.float32)
    for g, (sh, sw) in enumerate(shifts):
        mask[0, g * per : (g + 1) * per, sh : sh + h, sw : sw + w] = 1.0
    names = {k: f"{MERGED_CONV}.{k}" for k in ("weight", "bias", "mask", "out", "relu", "masked")}
    model.graph.initializer.extend([
        numpy_helper.from_array(weight, names["weight"]),
        numpy_helper.from_array(bias, names["bias"]),
        numpy_helper.from_array(mask, names["mask"]),
        numpy_helper.from_array(kernel2.astype(np.float32), f"{LAST_CONV}.weight"),
    ])  # fmt: skip
    make = helper.make_node
    merged = [
        make("Conv", [convs[0].input[0], names["weight"], names["bias"]], [names["out"]],
             name=MERGED_CONV, kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
        make("Relu", [names["out"]], [names["relu"]], name=f"{MERGED_CONV}_relu"),
        make("Mul", [names["relu"], names["mask"]], [names["masked"]], name=BORDER_MASK),
        make("Conv", [names["masked"], f"{LAST_CONV}.weight", *last.input[2:]], [last.output[0]],
             name=LAST_CONV, kernel_shape=[2, 2]),
    ]  # fmt: skip
    nodes = []
    for node in model.graph.node:
        if node is last:
            nodes += merged
        elif not any(node is n for n in (*convs, cat, relu)):
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)


def mask_as_min(model: onnx.ModelProto) -> int:
    """In a quantized graph, the border mask's DequantizeLinear -> Mul -> QuantizeLinear as
    one Min of the uint8 tensor with 0 (border) or 255 (inside): exact where the masked
    tensor's zero point is 0 (the ReLU's range). The following DequantizeLinear then reads
    the Min with the masked tensor's own scale. Returns how many masks were rewritten."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    mul = next((n for n in model.graph.node if n.name == BORDER_MASK), None)
    if mul is None:
        return 0
    x_dq, m_dq = (producer.get(i) for i in mul.input)
    users = _consumers(model, mul.output[0])
    if (x_dq is None or m_dq is None or x_dq.op_type != "DequantizeLinear" or len(users) != 1
            or m_dq.op_type != "DequantizeLinear" or users[0].op_type != "QuantizeLinear"
            or m_dq.input[0] not in inits or x_dq.input[2] not in inits):  # fmt: skip
        return 0
    zero = numpy_helper.to_array(inits[x_dq.input[2]])
    mask = numpy_helper.to_array(inits[m_dq.input[0]])
    if zero.dtype != np.uint8 or zero.any():
        return 0
    out_q = users[0]
    name = f"{BORDER_MASK}.bytes"
    model.graph.initializer.append(
        numpy_helper.from_array(np.where(mask > 0, 255, 0).astype(np.uint8), name)
    )
    min_node = helper.make_node("Min", [x_dq.input[0], name], [out_q.output[0]], name=BORDER_MASK)
    for dq in _consumers(model, out_q.output[0]):  # read back with the unmasked tensor's scale
        dq.input[1], dq.input[2] = x_dq.input[1], x_dq.input[2]
    nodes = []
    for node in model.graph.node:
        if node is mul:
            nodes.append(min_node)
        elif node is not out_q:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    for node in [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                 and not any(o in used for o in n.output)]:  # fmt: skip
        model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)
    return 1


def quantize_graph(src: Path, dst: Path, name: str, data: np.ndarray, recipe: str
                   ) -> dict[str, Any]:  # fmt: skip
    """Write the int8 graph of ``src`` (a float32 graph; external data beside it) for
    ``recipe`` to ``dst``, calibrated on ``data`` fed as input ``name``. Returns what was
    done: the nodes kept float, and how many pointwise Convs were composed."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    model, rewrites = prepare(onnx.load(str(src)), recipe)
    exclude = float_convs(model)
    extra: dict[str, Any] = {}
    if recipe == "int8-float-last":
        exclude += [n for n in last_layer(model) if n not in exclude]
    if recipe == "int8-float-outputs":
        extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
    masks = ["Mul"] if rewrites["merged_phase_convs"] else []
    with tempfile.TemporaryDirectory(prefix="vae-int8-recipe-") as tmp:
        staged = Path(tmp) / "float.onnx"
        onnx.save(model, str(staged))
        overrides = _relu_ranges(model, name, data)
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        extra["CalibPercentile"] = CALIBRATION_PERCENTILE
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            _quantize_static(staged, dst, name, data, exclude, masks, extra)
    if rewrites["merged_phase_convs"]:
        quantized = onnx.load(str(dst))
        if mask_as_min(quantized):
            onnx.save(quantized, str(dst))
    return {"float_nodes": sorted(exclude), **rewrites}


def _quantize_static(
    staged: Path, dst: Path, name: str, data: np.ndarray, exclude: list[str],
    masks: list[str], extra: dict[str, Any],
) -> None:  # fmt: skip
    quantize_static(
        str(staged), str(dst), _Batches(name, data), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=[*QUANTIZED_OPS, *FOLDED_OPS, *masks], per_channel=True,
        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=exclude,
        extra_options=extra,
    )  # fmt: skip


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
