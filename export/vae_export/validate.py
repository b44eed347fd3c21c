"""Checks that run before anything is written: the ONNX checker, the graph contract, no
random operators, and ONNX Runtime against PyTorch on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vae_export.errors import ValidationError
from vae_export.graphs import DECODER_IO, ENCODER_IO, random_ops

PARITY_TOLERANCE = 1e-5
BATCH_SIZES = (1, 7, 128)
# -log p(x|z) per image from ORT's x_hat against PyTorch's, relative. An absolute bound on
# x_hat cannot see an output flushed from 1e-12 to 0, which the log turns into 70 nats.
LIKELIHOOD_REL_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityRow:
    graph: str
    output: str
    inputs: str
    batch: int
    max_abs: float
    max_rel: float  # max |ort - torch| / max |torch|
    mean_abs: float


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
    image, latent = [None, 1, 28, 28], [None, latent_dim]
    if role == "encoder":
        names, want = ENCODER_IO, {"x": image, "mu": latent, "logvar": latent}
    else:
        names, want = DECODER_IO, {"z": latent, "x_hat": image}
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if (got_in, got_out) != (names[0], names[1]):
        raise ValidationError(
            f"{role} graph has inputs {got_in} and outputs {got_out}, expected {names[0]} -> "
            f"{names[1]}"
        )
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ValidationError(f"{role} graph: {vi.name} is not float32")
        if _dims(vi) != want[vi.name]:
            raise ValidationError(
                f"{role} graph: {vi.name} has shape {_dims(vi)}, expected {want[vi.name]} "
                "(None = dynamic batch)"
            )
    found = random_ops(model)
    if found:
        raise ValidationError(f"{role} graph holds random operators: {', '.join(found)}")


def _compare(graph, output, inputs, got, want) -> ParityRow:
    err = np.abs(got.astype(np.float64) - want)
    diff = float(err.max()) if err.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    mean = float(err.mean()) if err.size else 0.0
    return ParityRow(graph, output, inputs, len(want), diff, diff / scale if scale else diff, mean)


@torch.no_grad()
def encoder_parity(
    encoder: nn.Module, session: ort.InferenceSession, images: np.ndarray, inputs: str,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:  # fmt: skip
    rows = []
    for n in batch_sizes:
        x = np.ascontiguousarray(images[:n], dtype=np.float32)
        mu_t, logvar_t = (t.numpy() for t in encoder.eval()(torch.from_numpy(x)))
        mu_o, logvar_o = session.run(["mu", "logvar"], {"x": x})
        rows.append(_compare("encoder", "mu", inputs, mu_o, mu_t))
        rows.append(_compare("encoder", "logvar", inputs, logvar_o, logvar_t))
    return rows


@torch.no_grad()
def decoder_parity(
    decoder: nn.Module, session: ort.InferenceSession, latents: np.ndarray, inputs: str,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:  # fmt: skip
    rows = []
    for n in batch_sizes:
        z = np.ascontiguousarray(latents[:n], dtype=np.float32)
        want = decoder.eval()(torch.from_numpy(z)).numpy()
        (got,) = session.run(["x_hat"], {"z": z})
        rows.append(_compare("decoder", "x_hat", inputs, got, want))
    return rows


@torch.no_grad()
def likelihood_parity(
    encoder: nn.Module, decoder: nn.Module, session: ort.InferenceSession, images: np.ndarray,
    likelihood: dict, batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[ParityRow]:  # fmt: skip
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
        rows.append(ParityRow("decoder", "nll", "test images", n, float(err.max()),
                              float((err / np.abs(want)).max()), float(err.mean())))  # fmt: skip
    return rows


def maxima(rows: Sequence[ParityRow], field: str = "max_abs") -> dict[str, float]:
    """The largest ``field`` per output name."""
    out: dict[str, float] = {}
    for r in rows:
        out[r.output] = max(out.get(r.output, 0.0), getattr(r, field))
    return out


def violations(rows: Sequence[ParityRow], tolerance: dict[str, float]) -> list[str]:
    """Each row figure above its bound; ``tolerance`` maps "max_abs"/"mean_abs" to bounds."""
    out = []
    for field, bound in tolerance.items():
        for r in rows:
            value = getattr(r, field)
            if value > bound:
                out.append(
                    f"{r.graph} output {r.output!r} differs from PyTorch by {value:.3g} "
                    f"({field.replace('_', ' ')}, batch {r.batch}, {r.inputs}); tolerance {bound:g}"
                )
    return out


def require_within(rows: Sequence[ParityRow], tolerance: float | dict[str, float]) -> None:
    bounds = {"max_abs": tolerance} if isinstance(tolerance, (int, float)) else tolerance
    found = violations(rows, bounds)
    if found:
        raise ValidationError(f"parity check failed: {found[0]}")


def rows_as_dicts(rows: Sequence[ParityRow]) -> list[dict[str, object]]:
    return [asdict(r) for r in rows]


def format_table(rows: Sequence[ParityRow]) -> str:
    head = (
        f"{'graph':8} {'output':7} {'inputs':14} {'batch':>6} {'max abs':>10} {'max rel':>10} "
        f"{'mean abs':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.graph:8} {r.output:7} {r.inputs:14} {r.batch:6d} {r.max_abs:10.2e} "
            f"{r.max_rel:10.2e} {r.mean_abs:10.2e}"
        )
    return "\n".join(lines)
