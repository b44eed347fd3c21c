"""FLOPs per image (one multiply-add = 2 FLOPs), recorded in the manifest for benchmarks.

``model_flops`` counts the arithmetic the network defines (PyTorch modules);
``graph_flops`` counts what an ONNX graph executes, which for the phase-form decoder
includes the multiplications by the zero taps of its last 3x3 kernel. Benchmarks quote
throughput against the model's count, so a rewrite cannot inflate its own GFLOP/s.
"""

from __future__ import annotations

import math

import onnx
import torch
from torch import nn


def model_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass per image, from Conv/ConvTranspose/Linear layers."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += 2 * layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            k = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
            total += 2 * k * output[0].numel()
        elif isinstance(layer, nn.ConvTranspose2d):
            k = layer.out_channels // layer.groups * math.prod(layer.kernel_size)
            total += 2 * k * inputs[0][0].numel()

    layers = [
        m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    ]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            module.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def graph_flops(model: onnx.ModelProto) -> int:
    """FLOPs per image of the Conv, ConvTranspose, Gemm and MatMul nodes of a graph."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes[node.input[1]]
            if node.op_type == "Conv":  # w: (C_out, C_in/g, kh, kw)
                total += 2 * math.prod(w[1:]) * math.prod(shapes[node.output[0]][1:])
            else:  # w: (C_in, C_out/g, kh, kw)
                total += 2 * math.prod(w[1:]) * math.prod(shapes[node.input[0]][1:])
        elif node.op_type in ("Gemm", "MatMul"):
            w = shapes[node.input[1]]
            total += 2 * w[0] * w[1]
    return total
