"""torch modules -> ONNX ModelProtos with the contract's names, shapes and metadata."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from vae_export.phase import rewrite_decoder
from vae_format.contract import IMAGE_SHAPE, contract

DEFAULT_OPSET = 18
DECODER_FORMS = ("phase", "convtranspose")
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
)


def _quiet_exporter() -> None:
    # The exporter warns about torchvision ops it cannot register; we never use them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_module(
    module: nn.Module, example: torch.Tensor, role: str, opset: int
) -> onnx.ModelProto:
    """Export with the dynamo exporter, the contract's tensor names for ``role``, a dynamic
    batch dimension and inline weights."""
    _quiet_exporter()
    spec = contract(role, latent_dim=1)  # the names do not depend on the latent size
    input_names, output_names = list(spec.input_names), list(spec.output_names)
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
    model = program.model_proto
    exact_sigmoid(model)
    return model


def export_encoder(encoder: nn.Module, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    return export_module(encoder, torch.rand(2, *IMAGE_SHAPE), "encoder", opset)


def export_decoder(
    decoder: nn.Module,
    latent_dim: int,
    opset: int = DEFAULT_OPSET,
    form: str = "phase",
    tail: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, int]:
    """Export the decoder and say how many layers were rewritten.

    ``form="phase"`` (the default) turns the ConvTranspose layers named by ``tail`` (the
    architecture's ``phase_tail``) into Convs over a phase grid (see phase.py);
    ``"convtranspose"``, or no tail, keeps the decoder as it is.
    """
    if form not in DECODER_FORMS:
        raise ValueError(f"decoder form must be one of {', '.join(DECODER_FORMS)}, got {form!r}")
    rewritten = 0
    if form == "phase":
        decoder, rewritten = rewrite_decoder(decoder, tail)
    return export_module(decoder, torch.randn(2, latent_dim), "decoder", opset), rewritten


def exact_sigmoid(model: onnx.ModelProto) -> int:
    """Rewrite each Sigmoid node as 1 / (1 + exp(-x)); returns how many.

    ONNX Runtime's CPU Sigmoid returns exactly 0 for every input below about -16 and is
    off by up to a factor of 5 just above that, where PyTorch (and the formula) give
    1e-7..1e-38. The absolute difference is tiny, but the Bernoulli likelihood takes
    log(x_hat): a pixel with faint ink where x_hat is flushed to 0 costs 100 nats (the
    BCE clamp) instead of ~30, so score() would disagree with the training loss. Exp,
    Add and Reciprocal are exact to an ulp, and underflow where PyTorch does (x < -88.7).
    """
    graph = model.graph
    one = f"{graph.name or 'g'}_sigmoid_one"
    count = 0
    nodes = []
    for node in graph.node:
        if node.op_type != "Sigmoid":
            nodes.append(node)
            continue
        (x,), (y,), base = node.input, node.output, node.name or f"sigmoid{count}"
        make = onnx.helper.make_node
        nodes += [
            make("Neg", [x], [f"{base}_neg"], name=f"{base}_neg"),
            make("Exp", [f"{base}_neg"], [f"{base}_exp"], name=f"{base}_exp"),
            make("Add", [f"{base}_exp", one], [f"{base}_den"], name=f"{base}_den"),
            make("Reciprocal", [f"{base}_den"], [y], name=f"{base}_rcp"),
        ]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.0, np.float32), one))
    return count


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
