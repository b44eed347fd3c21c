"""The fp16 variant, for the CUDA execution provider: an fp16 decoder, the fp32 encoder.

GPUs run float16 convolutions and GEMMs on tensor cores at several times their float32
rate; CPUs mostly do not, so this variant is meant for ``VAE(..., variant="fp16",
providers="cuda")``. Only the decoder is converted: generation is where the throughput goes,
while embeddings (the encoder's ``mu``) keep their fp32 precision and the variant reuses
``encoder.onnx`` as it is.

The decoder keeps float32 inputs and outputs (Casts at both ends), and its final sigmoid,
written as 1 / (1 + exp(-x)) (graphs.exact_sigmoid), stays in float32: in float16, exp(-x)
overflows for logits below -11 and x_hat would round to 0 for every pixel with faint
ink, which costs up to 100 nats of Bernoulli likelihood per pixel (the same failure that
ORT's CPU Sigmoid has in float32). The variant is held to FP16_TOLERANCE against the
PyTorch checkpoint and to MAX_NELBO_CHANGE against the fp32 graphs, on the CPU execution
provider here and on CUDA wherever tests run with a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from vae_export import parity, validate, variant
from vae_export.builder import changed_model_dir
from vae_export.data import prior_latents

VARIANT = "fp16"
DECODER_FILE = "decoder.fp16.onnx"
METHOD = (
    "onnxruntime.transformers.float16, float32 inputs/outputs and final sigmoid; encoder "
    "unchanged (fp32)"
)
# Against the fp32 PyTorch checkpoint, on x_hat in [0, 1].
FP16_TOLERANCE = {"max_abs": 1e-2, "mean_abs": 1e-3}
MAX_NELBO_CHANGE = 0.1  # nats per test image, against the fp32 graphs
_TAIL_OPS = frozenset({"Neg", "Exp", "Add", "Reciprocal", "Sigmoid", "Reshape"})


def float32_tail(model: onnx.ModelProto, output: str = "x_hat") -> list[str]:
    """Names of the nodes that compute the sigmoid at the end of the decoder (kept fp32):
    walking back from ``output`` through the sigmoid's elementwise ops and reshapes."""
    producers = {out: node for node in model.graph.node for out in node.output}
    tail: list[onnx.NodeProto] = []
    pending = [output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.op_type not in _TAIL_OPS or node in tail:
            continue
        if not node.name:
            raise ValueError(f"unnamed {node.op_type} node at the end of the decoder")
        tail.append(node)
        pending += list(node.input)
    if not any(node.op_type in ("Reciprocal", "Sigmoid") for node in tail):
        raise ValueError(f"the decoder graph's {output!r} does not come from a sigmoid")
    return [node.name for node in tail]


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Put the nodes in topological order (the converter appends its Casts at the end,
    which ONNX Runtime accepts but the ONNX checker, rightly, does not)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise ValueError("the fp16 graph has a cycle or an undefined input")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in runnable]
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_round_trips(graph: onnx.GraphProto) -> int:
    """Replace each Cast to float16 that only feeds Casts back to float32 by an Identity.

    The converter wraps every float32 node in Casts of its own, so between two consecutive
    float32 nodes the value still passes through float16: exp(-x) would overflow there for
    logits below -11 and x_hat become 0. Returns how many round trips were dropped."""
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None)

    round_trips = [
        (node, users)
        for node in graph.node
        if node.op_type == "Cast"
        and cast_to(node) == f16
        and node.output[0] not in outputs
        and (users := consumers.get(node.output[0], []))
        and all(u.op_type == "Cast" and cast_to(u) == f32 for u in users)
    ]
    gone = {id(n) for node, users in round_trips for n in (node, *users)}
    kept = [n for n in graph.node if id(n) not in gone]
    for node, users in round_trips:
        kept += [
            onnx.helper.make_node(
                "Identity", [node.input[0]], list(u.output), name=f"{u.name}_float32"
            )
            for u in users
        ]
    del graph.node[:]
    graph.node.extend(kept)  # sorted afterwards
    return len(round_trips)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The decoder in float16, float32 at its inputs, outputs and final sigmoid."""
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=float32_tail(model))
    _drop_round_trips(half.graph)
    _sort_nodes(half.graph)
    del half.graph.value_info[:]  # the converter's type annotations; stale after the above
    onnx.checker.check_model(half, full_check=True)
    return half


def add_fp16_variant(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    eval_size: int | None = None,
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    """Convert ``model_dir``'s decoder to float16, check it, and add variant "fp16"."""
    check = variant.prepare(model_dir, data_dir, "convert to fp16", eval_size=eval_size, seed=seed)
    source = check.source
    fp32_decoder = source.path / source.graph_files()["decoder"]
    files = {"encoder": source.graph_files()["encoder"], "decoder": DECODER_FILE}
    with changed_model_dir(source.path) as builder:
        t0 = time.perf_counter()
        # onnx.load reads the external data from the checkpoints beside the graph.
        half = to_fp16(onnx.load(str(fp32_decoder)))
        path = builder.add_bytes(DECODER_FILE, half.SerializeToString(), "graph")
        seconds = time.perf_counter() - t0
        rows = _parity(check, validate.ort_session(str(path)), seed)
        quality = variant.score(builder, check, VARIANT, files, MAX_NELBO_CHANGE, two_sided=True)
        fp32_bytes = source.fp32_graph_bytes("decoder")
        info = variant.entry(
            files,
            method=METHOD,
            command=command,
            tolerance=FP16_TOLERANCE,
            max_nelbo_change=MAX_NELBO_CHANGE,
            rows=rows,
            quality=quality,
            size_ratio={"decoder": fp32_bytes / path.stat().st_size},
            seconds=seconds,
            intended_providers=["CUDAExecutionProvider"],
        )
        builder.add_variant(VARIANT, files, info)
    return info


def _parity(check: variant.VariantCheck, session: Any, seed: int) -> list[parity.ParityRow]:
    """The fp16 decoder against the PyTorch checkpoint on prior draws and posterior samples
    of test images, held to FP16_TOLERANCE."""
    decoder, fp32 = check.source.checkpoint.decoder, check.fp32
    latents = prior_latents(check.source.latent_dim)
    rows = validate.decoder_parity(decoder, session, latents, "N(0,I)")
    posterior = fp32.sample(*fp32.encode(check.test_x[:128]), seed=seed)
    rows += validate.decoder_parity(decoder, session, posterior, "posterior z")
    parity.require_within(rows, FP16_TOLERANCE)
    return rows
