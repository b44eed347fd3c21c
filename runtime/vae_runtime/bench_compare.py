"""``vae-run bench --compare``: every available backend x variant x precision on one model,
side by side, alternating round by round in one process.

Contenders (:func:`engine_contenders`): ONNX Runtime runs the default graphs and every CPU
variant the manifest lists; OpenVINO, where installed, runs the default graphs at each
precision asked for (default: f32 and, where its CPU plugin has it, bf16) and the int8
variant, with the static batch shapes asked for. ``vae-export bench --compare`` adds PyTorch
eager (fp32, bf16 autocast) on the same weights through ``extra``.

Figures: images/s (wall) and images per CPU-second of this process (the figure to compare
on a shared, loaded machine), GFLOP per CPU-second from the model's own FLOP count, its
share of the engines' own measured float32 (and bf16) GEMM peak (gemm_peak.py: numpy's and
torch's BLAS may not recognise the CPU), and, given test images, each contender's change
in test negative ELBO against ONNX Runtime fp32 (engine_parity.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vae_format import Manifest

from . import gemm_peak
from .contenders import (
    ROLES,
    Contender,
    Runners,
    engine_contenders,
    engine_for,
    feeds_for,
    openvino_available,
    rates,
)
from .engine_parity import load_runners, parity
from .model_dir import resolve_model_dir


def load_contender(c: Contender, manifest: Manifest, threads: int) -> Runners:
    """role -> runner of contender ``c``; an engine's runners come from the verified graphs.
    ORT threads do not spin: contenders alternate, no thread may spin into the next."""
    if c.loader is not None:
        return c.loader()
    engine = engine_for(c, manifest, threads, {"spinning": False})
    return load_runners(engine, manifest, c.variant)


def measure(
    runners: Mapping[Contender, Runners],
    latent_dim: int,
    batch_sizes: Sequence[int],
    rounds: int,
    budget_s: float,
) -> dict[tuple[Contender, str, int], tuple[float, float]]:
    """(contender, role, batch) -> median (images/s, images per CPU-second) over ``rounds``
    rounds in which every contender runs in turn, so drift in machine load hits all alike."""
    out = {}
    for b in batch_sizes:
        feeds = feeds_for(b, latent_dim)
        for role in ROLES:
            calls = {c: partial(r[role].run, None, feeds[role]) for c, r in runners.items()}
            got: dict[Contender, list[tuple[float, float]]] = {c: [] for c in calls}
            for _ in range(rounds):
                for c, call in calls.items():
                    got[c].append(rates(call, b, budget_s))
            for c, pairs in got.items():
                out[(c, role, b)] = (
                    statistics.median(p[0] for p in pairs),
                    statistics.median(p[1] for p in pairs),
                )
    return out


def peaks(contenders: Sequence[Contender], threads: int) -> dict[str, float]:
    """GEMM peaks per CPU-second through the engines (threads x the per-core rate)."""
    found = {"f32": gemm_peak.ort_peak(1)}
    if any(c.precision == "bf16" for c in contenders) and openvino_available():
        found["bf16"] = gemm_peak.openvino_peak(1, "bf16")
    return {k: v * threads for k, v in found.items()}


def compare(
    model: str | Path | None,
    threads: int = 1,
    batch_sizes: Sequence[int] = (1, 256, 1024),
    rounds: int = 5,
    budget_s: float = 0.2,
    test_images: np.ndarray | None = None,
    precisions: Sequence[str] | None = None,
    static_batches: Sequence[int] = (8,),
    extra: Sequence[Contender] = (),
) -> dict[str, Any]:
    """The comparison report (plain data; :func:`format_report` prints it)."""
    manifest = Manifest.load(resolve_model_dir(model))
    found = [*engine_contenders(manifest, precisions, static_batches), *extra]
    runners = {c: load_contender(c, manifest, threads) for c in found}
    timed = measure(runners, manifest.latent_dim, batch_sizes, rounds, budget_s)
    top = {role: manifest.raw["graphs"][role].get("flops_per_image") for role in ROLES}
    rows = []
    for b in batch_sizes:
        for role in ROLES:
            for c in found:
                wall, cpu = timed[(c, role, b)]
                gflop = cpu * top[role] / 1e9 if top[role] else None
                rows.append({"contender": c.label, "backend": c.backend,
                             "graphs": c.variant or "fp32", "precision": c.precision,
                             "op": role, "batch": b, "images_per_s": wall,
                             "images_per_cpu_s": cpu, "gflop_per_cpu_s": gflop})  # fmt: skip
    report: dict[str, Any] = {
        "model": manifest.name,
        "threads": threads,
        "rounds": rounds,
        "seconds_per_round": budget_s,
        "cpu": cpu_name(),
        "peaks": peaks(found, threads),
        "rows": rows,
    }
    if test_images is not None:
        reference = runners[found[0]]
        report["test_images"] = len(test_images)
        report["nelbo_change"] = {
            c.label: parity(runners[c], reference, manifest, test_images)["nelbo_change"]
            for c in found
        }
    return report


def cpu_name() -> str:
    """The CPU's model name and the flags that decide which kernels run (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    info = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines())
    )
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    family = f", family {info['cpu family']}" if "cpu family" in info else ""
    return (
        f"{info.get('model name', 'unknown')}{family} ({' '.join(f for f in wanted if f in flags)})"
    )


def format_report(report: dict[str, Any]) -> str:
    peaks_, changes = report["peaks"], report.get("nelbo_change", {})
    lines = [
        f"{report['model']}, {report['threads']} thread(s), {report['cpu']}",
        f"{report['rounds']} alternating rounds x {report['seconds_per_round']:g} s per "
        "contender; medians. GEMM peak per CPU-second (1024x1024 MatMul through the engines): "
        + ", ".join(f"{k} {v:.0f} GFLOP" for k, v in peaks_.items()),
    ]
    if changes:
        lines.append(
            f"dELBO: change in test negative ELBO vs onnxruntime fp32, nats per image "
            f"({report['test_images']} test images)"
        )
    else:
        lines.append("dELBO: not measured (no test images: give --data-dir)")
    width = max(len(r["contender"]) for r in report["rows"]) + 2
    head = (f"{'op':8}{'batch':>6}  {'backend graphs precision':{width}}{'img/s':>9}"
            f"{'img/cpu-s':>11}{'GFLOP/cpu-s':>12}{'% f32 pk':>9}"
            f"{'% bf16 pk':>10}{'dELBO':>8}")  # fmt: skip
    lines += ["", head, "-" * len(head)]
    last = None
    for r in report["rows"]:
        if last is not None and (r["op"], r["batch"]) != last:
            lines.append("")
        last = (r["op"], r["batch"])
        g = r["gflop_per_cpu_s"]
        f32 = f"{100 * g / peaks_['f32']:8.0f}%" if g else f"{'-':>9}"
        bf = f"{100 * g / peaks_['bf16']:9.0f}%" if g and "bf16" in peaks_ else f"{'-':>10}"
        change = changes.get(r["contender"])
        lines.append(
            f"{r['op'][:3]:8}{r['batch']:6d}  {r['contender']:{width}}{r['images_per_s']:9,.0f}"
            f"{r['images_per_cpu_s']:11,.0f}{g or 0:12.1f}{f32}{bf}"
            f"{'-' if change is None else f'{change:+.3f}':>8}"
        )
    return "\n".join(lines)


def test_images_of(model: str | Path | None, data_dir: str | Path) -> np.ndarray:
    """The model's dataset's test images as float32 (N, 1, 28, 28) in [0, 1]."""
    from .evaluate import load_split

    manifest = Manifest.load(resolve_model_dir(model))
    x, _ = load_split(Path(data_dir), manifest.raw["dataset"]["name"], "test")
    return x[:, None].astype(np.float32) / 255
