"""torch modules -> ONNX ModelProtos with the contract's names, shapes and metadata."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import onnx
import torch
from torch import nn

from vae_export.subpixel import rewrite_conv_transposes

DEFAULT_OPSET = 18
ENCODER_IO = (["x"], ["mu", "logvar"])
DECODER_IO = (["z"], ["x_hat"])
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})  # fmt: skip


def _quiet_exporter() -> None:
    # The exporter warns about torchvision ops it cannot register; we never use them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> onnx.ModelProto:
    """Export with the dynamo exporter, a dynamic batch dimension and inline weights."""
    _quiet_exporter()
    batch = torch.export.Dim("N", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes={input_names[0]: {0: batch}},
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def export_encoder(encoder: nn.Module, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    return export_module(encoder, torch.rand(2, 1, 28, 28), *ENCODER_IO, opset)


def export_decoder(
    decoder: nn.Module, latent_dim: int, opset: int = DEFAULT_OPSET, subpixel: bool = True
) -> tuple[onnx.ModelProto, int]:
    """Export the decoder, by default with its ConvTransposes in sub-pixel form."""
    rewritten = 0
    if subpixel:
        decoder, rewritten = rewrite_conv_transposes(decoder)
    return export_module(decoder, torch.randn(2, latent_dim), *DECODER_IO, opset), rewritten


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Add ``props`` to the graph's metadata_props (replacing keys already there)."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def random_ops(model: onnx.ModelProto) -> list[str]:
    """Names of random operators anywhere in the graph, subgraphs included."""
    found = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in RANDOM_OPS:
                found.append(f"{node.op_type} ({node.name})")
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return found
