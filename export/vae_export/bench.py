"""``vae-export bench``: the same weights in PyTorch eager and in the runtime, side by side.

Both run in one process with the same thread count, alternating round by round so that
drift in machine load hits both alike; each figure is the median over rounds of the
per-round median call time. ORT thread spinning is off, as in export validation:
spinning ORT threads would steal the cores from the torch calls that follow.

``--compare`` runs the runtime's comparison (vae_runtime.bench_compare: every backend x
variant x precision, images per CPU-second) with PyTorch eager float32 and bfloat16
autocast (channels_last) added as contenders on the same weights (:func:`torch_contenders`).

The GEMM peak printed is the engines' own (a 1024x1024 MatMul through ONNX Runtime, see
vae_runtime.gemm_peak): torch's MKL and numpy's OpenBLAS run their AVX2 kernels on some
CPUs (AMD family 1Ah) and reach half of it, so torch.mm is shown beside it, not as the peak.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_export.exporter import export_model_dir
from vae_export.model_source import model_checkpoint
from vae_format.errors import DataFileError
from vae_runtime import VAE, gemm_peak
from vae_runtime.bench import time_calls
from vae_runtime.bench_compare import compare as runtime_compare
from vae_runtime.bench_compare import format_report, test_images_of
from vae_runtime.contenders import Contender

OUTPUTS = {"encoder": ("mu", "logvar"), "decoder": ("x_hat",)}


class TorchRunner:
    """A PyTorch module behind the runtime's GraphRunner ``run`` (numpy in, numpy out), in
    float32 or under bfloat16 autocast with channels_last images."""

    def __init__(self, module: torch.nn.Module, role: str, bf16: bool) -> None:
        self.module = module.eval()
        self.names = OUTPUTS[role]
        self.bf16 = bf16

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list:
        x = torch.from_numpy(next(iter(feeds.values())))
        if self.bf16 and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        cast = (
            torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with torch.inference_mode(), cast:
            out = self.module(x)
        outs = out if isinstance(out, tuple) else (out,)
        values = {n: o.float().numpy() for n, o in zip(self.names, outs, strict=True)}
        return [values[n] for n in (output_names or self.names)]


def torch_contenders(model_dir: Path, threads: int) -> list[Contender]:
    """PyTorch eager float32 and bfloat16 autocast (channels_last) on the model's checkpoints."""
    torch.set_num_threads(threads)
    ckpt = model_checkpoint(model_dir, "bench")

    def load(bf16: bool) -> dict[str, Any]:
        modules = {"encoder": ckpt.encoder, "decoder": ckpt.decoder}
        if bf16:
            modules = {r: copy.deepcopy(m).to(memory_format=torch.channels_last)
                       for r, m in modules.items()}  # fmt: skip
        return {r: TorchRunner(m, r, bf16) for r, m in modules.items()}

    return [
        Contender("torch", None, "fp32", note="eager", loader=partial(load, False)),
        Contender(
            "torch", None, "bf16", note="autocast, channels_last", loader=partial(load, True)
        ),
    ]


def compare_all(
    path: Path,
    data_dir: str | Path,
    batch_sizes: Sequence[int],
    threads: int,
    rounds: int = 5,
    seconds: float = 1.0,
    precisions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The runtime's comparison table with the PyTorch contenders added; the ELBO column
    where the dataset's test files are found under ``data_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model_dir(path, data_dir, Path(tmp))
        try:
            images = test_images_of(model_dir, data_dir)
        except DataFileError:
            images = None
        return runtime_compare(
            model_dir, threads, batch_sizes, rounds, seconds / rounds, images, precisions,
            extra=torch_contenders(model_dir, threads),
        )  # fmt: skip


__all__ = ["TorchRunner", "compare", "compare_all", "format_report", "torch_contenders"]


def _median_time(fn: Any, budget_s: float) -> float:
    return float(np.median(time_calls(fn, budget_s, min_calls=5)))


def compare(
    model_dir: Path,
    batch_sizes: Sequence[int],
    threads: int,
    rounds: int = 5,
    budget_s: float = 0.4,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """``variant`` (e.g. "int8") runs that variant's graphs against the fp32 PyTorch
    modules: a comparison of deployments, not of engines on equal arithmetic."""
    ckpt = model_checkpoint(model_dir, "bench")
    torch.set_num_threads(threads)
    vae = VAE(
        model_dir, threads=threads, spinning=False, batch_size=max(batch_sizes), variant=variant
    )
    flops = {r: vae.manifest["graphs"][r].get("flops_per_image") for r in ("encoder", "decoder")}
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        x = rng.random((b, 1, 28, 28), dtype=np.float32)
        z = rng.standard_normal((b, vae.latent_dim), dtype=np.float32)
        xt, zt = torch.from_numpy(x), torch.from_numpy(z)
        ops = {
            "encode": (partial(ckpt.encoder, xt), partial(vae.encode, x), flops["encoder"]),
            "decode": (partial(ckpt.decoder, zt), partial(vae.decode, z), flops["decoder"]),
        }
        for op, (torch_fn, ort_fn, f) in ops.items():
            t_torch, t_ort = [], []
            with torch.inference_mode():
                for _ in range(rounds):
                    t_torch.append(_median_time(torch_fn, budget_s))
                    t_ort.append(_median_time(ort_fn, budget_s))
            rows.append(_row(op, b, float(np.median(t_torch)), float(np.median(t_ort)), f))
    return rows


def _row(op: str, batch: int, t_torch: float, t_ort: float, flops: int | None) -> dict[str, Any]:
    return {
        "op": op,
        "batch": batch,
        "torch_per_s": batch / t_torch,
        "runtime_per_s": batch / t_ort,
        "ratio": t_torch / t_ort,
        "torch_gflops": flops * batch / t_torch / 1e9 if flops else None,
        "runtime_gflops": flops * batch / t_ort / 1e9 if flops else None,
    }


def gemm_peak_gflops(threads: int, n: int = 1024, budget_s: float = 0.5) -> float:
    """GFLOP/s (wall) of a large float32 matrix product through ONNX Runtime at ``threads``
    threads: what these cores deliver, the ceiling both sides' GFLOP/s are bounded by."""
    return gemm_peak.ort_peak(threads, n, budget_s, clock="wall")


def torch_mm_gflops(threads: int, n: int = 1024, budget_s: float = 0.5) -> float:
    """GFLOP/s (wall) of torch.mm on the same product (its BLAS's kernels; shown beside the
    peak, which it may not reach on this CPU)."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = float(np.min(time_calls(partial(torch.mm, a, b), budget_s, min_calls=5)))
    return 2 * n**3 / best / 1e9


def resolve_model_dir(path: Path, data_dir: str | Path, tmp: Path) -> Path:
    """A model directory as is, or a run directory exported to a temporary one."""
    if (path / "manifest.json").is_file():
        return path
    return export_model_dir(path, tmp / "model", data_dir=data_dir).out_dir


def format_rows(
    rows: list[dict[str, Any]],
    threads: int,
    peak: float | None = None,
    variant: str | None = None,
    torch_mm: float | None = None,
) -> str:
    head = (
        f"{'op':7} {'batch':>6} {'torch img/s':>12} {'runtime img/s':>14} {'ratio':>7} "
        f"{'torch GFLOP/s':>14} {'runtime GFLOP/s':>16}"
    )
    what = f"vae_runtime ({variant} variant)" if variant else "vae_runtime"
    lines = [f"PyTorch {torch.__version__} eager (float32) vs {what}, {threads} threads"]
    if peak:
        mm = f"; torch.mm reaches {torch_mm:.0f}" if torch_mm else ""
        lines.append(
            f"float32 GEMM peak of these cores (1024x1024 MatMul in ONNX Runtime): "
            f"{peak:.0f} GFLOP/s{mm}"
        )
    lines += [head, "-" * len(head)]
    for r in rows:
        g1 = f"{r['torch_gflops']:14.1f}" if r["torch_gflops"] else f"{'-':>14}"
        g2 = f"{r['runtime_gflops']:16.1f}" if r["runtime_gflops"] else f"{'-':>16}"
        lines.append(
            f"{r['op']:7} {r['batch']:6d} {r['torch_per_s']:12,.0f} "
            f"{r['runtime_per_s']:14,.0f} {r['ratio']:6.2f}x {g1} {g2}"
        )
    return "\n".join(lines)


def run(
    path: Path,
    data_dir: str | Path,
    batch_sizes: Sequence[int],
    threads: int,
    rounds: int = 5,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model_dir(path, data_dir, Path(tmp))
        return compare(model_dir, batch_sizes, threads, rounds, variant=variant)
