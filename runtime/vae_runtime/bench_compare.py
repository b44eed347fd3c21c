"""`vae-run bench --compare` (sketch, issue 16): every available backend x variant x precision
on one model, side by side, alternating round by round in one process.

Each contender is (backend, variant, precision): ONNX Runtime runs the default graphs and
every CPU variant the manifest lists; OpenVINO, where installed, runs the default graphs
at f32 and (where its CPU plugin has it) bf16, and the int8 variant. Figures: images/s
(wall) and images per CPU-second (robust on a shared, loaded machine), GFLOP per
CPU-second from the model's own FLOP count, its share of the engines' measured float32
(and bf16) GEMM peak (gemm_peak.py), and, given test images, the contender's measured
change in test negative ELBO against ONNX Runtime fp32 (engine_parity.py).

    python -m vae_runtime.bench_compare artifacts/mnist-conv-z20 --threads 1 \\
        --batch 1 256 --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vae_format import Manifest

from . import gemm_peak
from .engine_parity import load_runners, parity
from .engines import ENGINES, create_engine
from .model_dir import resolve_model_dir

CPU_VARIANTS_SKIPPED = ("fp16",)  # made for CUDA: on a CPU it only measures a fallback


@dataclass(frozen=True)
class Contender:
    backend: str
    variant: str | None
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.variant or 'fp32'} {self.precision}"


def contenders(manifest: Manifest) -> list[Contender]:
    variants = [v for v in sorted(manifest.variants) if v not in CPU_VARIANTS_SKIPPED]
    found = [Contender("onnxruntime", None, "f32")]
    found += [Contender("onnxruntime", v, "graph") for v in variants]
    if "openvino" in ENGINES and importlib.util.find_spec("openvino") is not None:
        best = create_engine("openvino", {}).precision
        found += [Contender("openvino", None, p) for p in dict.fromkeys(("f32", best))]
        found += [Contender("openvino", v, "graph") for v in variants if v == "int8"]
    return found


def _engine(c: Contender, threads: int) -> Any:
    options: dict[str, Any] = {"threads": threads}
    if c.backend == "onnxruntime":
        options["spinning"] = False  # contenders alternate: no thread may spin into the next
    elif c.precision != "graph":
        options["precision"] = c.precision
    return create_engine(c.backend, options)


def _median_rates(fn: Callable[[], Any], batch: int, budget_s: float) -> tuple[float, float]:
    fn()
    calls, c0, w0 = 0, time.process_time(), time.perf_counter()
    while calls < 3 or time.perf_counter() - w0 < budget_s:
        fn()
        calls += 1
    return batch * calls / (time.perf_counter() - w0), batch * calls / (time.process_time() - c0)


def compare(model: str | Path | None, threads: int = 1, batch_sizes: Sequence[int] = (1, 256),
            rounds: int = 5, budget_s: float = 0.25, test_images: np.ndarray | None = None,
            ) -> dict[str, Any]:  # fmt: skip
    manifest = Manifest.load(resolve_model_dir(model))
    found = contenders(manifest)
    runners = {c: load_runners(_engine(c, threads), manifest, c.variant) for c in found}
    flops = {r: manifest.raw["graphs"][r].get("flops_per_image") for r in ("encoder", "decoder")}
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        feeds = {
            "encoder": {"x": rng.random((b, 1, 28, 28), dtype=np.float32)},
            "decoder": {"z": rng.standard_normal((b, manifest.latent_dim), np.float32)},
        }
        for role in ("encoder", "decoder"):
            calls = {c: partial(runners[c][role].run, None, feeds[role]) for c in found}
            wall: dict[Contender, list[float]] = {c: [] for c in found}
            cpu: dict[Contender, list[float]] = {c: [] for c in found}
            for _ in range(rounds):  # alternate: drift in machine load hits all alike
                for c in found:
                    w, p = _median_rates(calls[c], b, budget_s)
                    wall[c].append(w)
                    cpu[c].append(p)
            for c in found:
                per_cpu = statistics.median(cpu[c])
                gflop = per_cpu * flops[role] / 1e9 if flops[role] else None
                rows.append({"contender": c.label, "op": role, "batch": b,
                             "images_per_s": statistics.median(wall[c]),
                             "images_per_cpu_s": per_cpu, "gflop_per_cpu_s": gflop})  # fmt: skip
    report: dict[str, Any] = {"model": manifest.name, "threads": threads, "rows": rows,
                              "peaks": _peaks(found, threads)}  # fmt: skip
    if test_images is not None:
        reference = runners[found[0]]
        report["nelbo_change"] = {
            c.label: parity(runners[c], reference, manifest, test_images)["nelbo_change"]
            for c in found
        }
    return report


def _peaks(found: Sequence[Contender], threads: int) -> dict[str, float]:
    """GEMM peaks per CPU-second (threads x the per-core rate when threads > 1)."""
    peaks = {"f32": gemm_peak.ort_peak(1) * threads}
    if any(c.precision == "bf16" for c in found):
        peaks["bf16"] = gemm_peak.openvino_peak(1, "bf16") * threads
    return peaks


def format_report(report: dict[str, Any]) -> str:
    peaks, changes = report["peaks"], report.get("nelbo_change", {})
    lines = [f"{report['model']}, {report['threads']} thread(s); GEMM peak per CPU-second: "
             + ", ".join(f"{k} {v:.0f} GFLOP" for k, v in peaks.items())]  # fmt: skip
    head = (f"{'op':8}{'batch':>6}  {'backend variant precision':28}{'img/s':>10}{'img/cpu-s':>11}"
            f"{'GFLOP/cpu-s':>12}{'% f32 pk':>9}{'% bf16 pk':>10}{'dELBO':>8}")  # fmt: skip
    lines += [head, "-" * len(head)]
    for r in report["rows"]:
        g = r["gflop_per_cpu_s"]
        bf = f"{100 * g / peaks['bf16']:9.0f}%" if g and "bf16" in peaks else f"{'-':>10}"
        change = changes.get(r["contender"])
        lines.append(
            f"{r['op'][:3]:8}{r['batch']:6d}  {r['contender']:28}{r['images_per_s']:10,.0f}"
            f"{r['images_per_cpu_s']:11,.0f}{g or 0:12.1f}{100 * (g or 0) / peaks['f32']:8.0f}%"
            f"{bf}{'' if change is None else f'{change:+8.3f}'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vae_runtime.bench_compare",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("model", nargs="?")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--data-dir", type=Path, help="test images for the ELBO change column")
    a = p.parse_args(argv)
    images = None
    if a.data_dir:
        from .evaluate import load_split

        manifest = Manifest.load(resolve_model_dir(a.model))
        x, _ = load_split(a.data_dir, manifest.raw["dataset"]["name"], "test")
        images = x[:, None].astype(np.float32) / 255
    print(format_report(compare(a.model, a.threads, a.batch, a.rounds, a.budget, images)))


if __name__ == "__main__":
    main()
