"""Checks that run before anything is written: the ONNX checker, the graph contract, no
random operators, and ONNX Runtime against PyTorch on the same inputs (the rows and their
bounds are in parity.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch import nn

from vae_export.errors import ValidationError
from vae_export.graphs import random_ops
from vae_export.parity import BATCH_SIZES, ParityRow, compare
from vae_format.contract import contract


def ort_session(
    model: bytes | str, threads: int | None = None, external: dict[str, bytes] | None = None
) -> ort.InferenceSession:
    """A CPU session with thread spinning off: spinning ORT threads starve torch when both
    run in one process. ``external``: external-data files (location -> bytes) of a graph
    given as bytes; a graph given as a path finds them beside itself."""
    opts = ort.SessionOptions()
    if external:
        names = list(external)
        opts.add_external_initializers_from_files_in_memory(
            names, [external[n] for n in names], [len(external[n]) for n in names]
        )
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def check_graph(model: onnx.ModelProto, role: str, latent_dim: int) -> None:
    """The ONNX checker, the contract's names/shapes/dtypes, and no random operators."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValidationError(f"onnx.checker rejected the {role} graph: {exc}") from None
    spec = contract(role, latent_dim)
    want_in, want_out = list(spec.input_names), list(spec.output_names)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if (got_in, got_out) != (want_in, want_out):
        raise ValidationError(
            f"{role} graph has inputs {got_in} and outputs {got_out}, expected {want_in} -> "
            f"{want_out}"
        )
    tensors = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for vi in [*model.graph.input, *model.graph.output]:
        want = tensors[vi.name]
        if vi.type.tensor_type.elem_type != helper.np_dtype_to_tensor_dtype(np.dtype(want.dtype)):
            raise ValidationError(f"{role} graph: {vi.name} is not {want.dtype}")
        if tuple(_dims(vi)) != want.shape:
            raise ValidationError(
                f"{role} graph: {vi.name} has shape {_dims(vi)}, expected {list(want.shape)} "
                "(None = dynamic batch)"
            )
    found = random_ops(model)
    if found:
        raise ValidationError(f"{role} graph holds random operators: {', '.join(found)}")


@torch.no_grad()
def encoder_parity(
    encoder: nn.Module,
    session: ort.InferenceSession,
    images: np.ndarray,
    inputs: str,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:
    rows = []
    for n in batch_sizes:
        x = np.ascontiguousarray(images[:n], dtype=np.float32)
        mu_t, logvar_t = (t.numpy() for t in encoder.eval()(torch.from_numpy(x)))
        mu_o, logvar_o = session.run(["mu", "logvar"], {"x": x})
        rows.append(compare("encoder", "mu", inputs, mu_o, mu_t))
        rows.append(compare("encoder", "logvar", inputs, logvar_o, logvar_t))
    return rows


@torch.no_grad()
def decoder_parity(
    decoder: nn.Module,
    session: ort.InferenceSession,
    latents: np.ndarray,
    inputs: str,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:
    rows = []
    for n in batch_sizes:
        z = np.ascontiguousarray(latents[:n], dtype=np.float32)
        want = decoder.eval()(torch.from_numpy(z)).numpy()
        (got,) = session.run(["x_hat"], {"z": z})
        rows.append(compare("decoder", "x_hat", inputs, got, want))
    return rows


@torch.no_grad()
def likelihood_parity(
    encoder: nn.Module,
    decoder: nn.Module,
    session: ort.InferenceSession,
    images: np.ndarray,
    likelihood: dict,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:
    """Per-image -log p(x | z = mu(x)) on real images (rows named "nll"): decoder graph
    against PyTorch."""
    from vae_runtime.likelihood import reconstruction_nll

    rows = []
    for n in batch_sizes:
        x = np.ascontiguousarray(images[:n], dtype=np.float32)
        mu = encoder.eval()(torch.from_numpy(x))[0]
        want_x_hat = decoder.eval()(mu).numpy()
        (got_x_hat,) = session.run(["x_hat"], {"z": mu.numpy()})
        name, sigma = likelihood["name"], likelihood.get("sigma")
        want = reconstruction_nll(want_x_hat, x, name, sigma)
        got = reconstruction_nll(got_x_hat, x, name, sigma)
        err = np.abs(got - want)
        max_abs, max_rel, mean = float(err.max()), float((err / np.abs(want)).max()), err.mean()
        rows.append(ParityRow("decoder", "nll", "test images", n, max_abs, max_rel, float(mean)))
    return rows
