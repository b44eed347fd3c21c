"""``vae-run bench``: throughput, latency, GFLOP/s and memory of the runtime (torch-free).

Timings warm up first and report medians; latency percentiles come from the individual
calls. GFLOP/s divides the model's own FLOP count (recorded by vae-export in the
manifest) by the median time, so a graph rewrite cannot inflate it. Cold start and
streaming memory are measured in fresh child processes, which report their own peak RSS
(VmHWM). Every figure goes through the engine seam, so any backend can be measured.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .engines import DEFAULT_ENGINE
from .vae import VAE


def peak_rss_mb() -> float:
    """This process's peak RSS (including whatever it inherited at fork, on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calls(
    fn: Callable[[], Any],
    budget_s: float = 1.0,
    min_calls: int = 10,
    max_calls: int = 2000,
    warmup: int = 3,
) -> np.ndarray:
    """Per-call seconds: ``warmup`` untimed calls, then calls until the budget is spent."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (
        time.perf_counter() - start < budget_s and len(times) < max_calls
    ):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.asarray(times)


def _row(op: str, batch: int, times: np.ndarray, flops: int | None) -> dict[str, Any]:
    p50 = float(np.median(times))
    return {
        "op": op,
        "batch": batch,
        "images_per_s": batch / p50,
        "p50_ms": p50 * 1e3,
        "p99_ms": float(np.percentile(times, 99)) * 1e3,
        "calls": len(times),
        "gflops": flops * batch / p50 / 1e9 if flops else None,
    }


def throughput(vae: VAE, batch_sizes: Sequence[int], budget_s: float = 1.0) -> list[dict]:
    graphs = vae.manifest["graphs"]
    enc_flops = graphs["encoder"].get("flops_per_image")
    dec_flops = graphs["decoder"].get("flops_per_image")
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        x = rng.random((b, 1, 28, 28), dtype=np.float32)
        z = rng.standard_normal((b, vae.latent_dim), dtype=np.float32)
        calls = {
            "encode": (partial(vae.encode, x), enc_flops),
            "decode": (partial(vae.decode, z), dec_flops),
            "generate": (partial(vae.generate, b, seed=0), dec_flops),
        }
        for op, (fn, flops) in calls.items():
            rows.append(_row(op, b, time_calls(fn, budget_s), flops))
    return rows


def bare_call(runner: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The engine's own call for ``feeds`` under a runner, without the runtime around it:
    ONNX Runtime's ``InferenceSession.run``, OpenVINO's infer request; a runner that picks
    by batch size (backend="auto") is looked through to the runner it picks."""
    rows = len(next(iter(feeds.values())))
    if hasattr(runner, "small_max"):
        runner = runner.small if rows <= runner.small_max else runner.large
    if hasattr(runner, "session"):
        return partial(runner.session.run, None, feeds)
    if hasattr(runner, "infer_request"):
        return partial(runner.infer_request(rows).infer, feeds)
    return partial(runner.run, None, feeds)


def cpu_per_call(fn: Callable[[], Any], budget_s: float) -> float:
    """CPU seconds of this process per call of ``fn``, over blocks of calls filling about
    ``budget_s`` (per-call CPU time; on a loaded machine wall time measures the neighbours)."""
    fn()
    calls, c0, w0 = 0, time.process_time(), time.perf_counter()
    while calls < 20 or time.perf_counter() - w0 < budget_s:
        for _ in range(10):
            fn()
        calls += 10
    return (time.process_time() - c0) / calls


def wrapper_overhead(vae: VAE, budget_s: float = 1.0) -> dict[str, float]:
    """CPU time per call of VAE.encode/decode at batch 1 over the engine's own call
    (bare_call); medians of 7 alternating rounds, so drift in machine load hits both alike."""
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    z = np.zeros((1, vae.latent_dim), np.float32)
    enc, dec = vae._encoder, vae._decoder  # the graph runners the wrapper itself uses
    out = {}
    for op, wrapped, bare in (
        ("encode", partial(vae.encode, x), bare_call(enc, {"x": x})),
        ("decode", partial(vae.decode, z), bare_call(dec, {"z": z})),
    ):
        w, r = [], []
        for _ in range(7):
            w.append(cpu_per_call(wrapped, budget_s / 14))
            r.append(cpu_per_call(bare, budget_s / 14))
        out[f"{op}_wrapper_us"] = float(np.median(w)) * 1e6
        out[f"{op}_bare_us"] = float(np.median(r)) * 1e6
        out[f"{op}_overhead_pct"] = (float(np.median(w)) / float(np.median(r)) - 1) * 100
    return out


def _run_child(code: str, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of ``python -c code`` in a fresh process."""
    t = time.perf_counter()
    cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed: {err.decode(errors='replace').strip()}")
    rss = float(out.decode().strip().splitlines()[-1])
    return wall, rss, out.decode()


# The child's own peak RSS. On Linux, ru_maxrss survives fork + exec and so would report
# the (larger) benchmarking parent's peak; VmHWM is the process's own high-water mark.
_RSS = """
import resource
try:
    hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(int(hwm) / 1024)
except (OSError, IndexError):
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def cold_start(
    model: str | None,
    runs: int = 7,
    backend: str = DEFAULT_ENGINE,
    engine_options: Mapping[str, Any] | None = None,
) -> dict:
    """Fresh process: import vae_runtime, load the model, generate 64 images."""
    load = f"VAE({model!r}, backend={backend!r}, engine_options={dict(engine_options or {})!r})"
    code = f"from vae_runtime import VAE; {load}.generate(64, seed=0)\n{_RSS}"
    walls, rsss = zip(*(_run_child(code)[:2] for _ in range(runs)), strict=True)
    return {
        "runs": runs,
        "median_s": float(np.median(walls)),
        "max_s": float(np.max(walls)),
        "peak_rss_mb": float(np.max(rsss)),
    }


def write_synthetic_idx(path: Path, n: int, seed: int = 0, chunk: int = 10_000) -> None:
    """An uncompressed IDX image file of ``n`` random 28x28 images, written in chunks."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write((0x803).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        for start in range(0, n, chunk):
            f.write(rng.integers(0, 256, (min(chunk, n - start), 28, 28), np.uint8).tobytes())


# A child that streams a file's embeddings to disk (what `vae-run embed` does).
_STREAM = """
from vae_runtime import VAE, open_images
from vae_runtime.streaming import embed_to_npy
vae = VAE({model!r}, backend={backend!r}, batch_size={batch_size})
embed_to_npy(vae, open_images({source!r}), {out!r}, batch_size={batch_size})
"""


def streaming_embed(
    model: str | None, n: int = 100_000, batch_size: int = 1024, backend: str = DEFAULT_ENGINE
) -> dict:
    """Peak RSS of embedding a synthetic IDX file of ``n`` images into a .npy file."""
    with tempfile.TemporaryDirectory() as tmp:
        idx, out = Path(tmp) / "images.idx", Path(tmp) / "emb.npy"
        write_synthetic_idx(idx, n)
        code = _STREAM.format(
            model=model, backend=backend, batch_size=batch_size, source=str(idx), out=str(out)
        )
        wall, rss, _ = _run_child(code + _RSS)
        shape = np.load(out, mmap_mode="r").shape
    return {
        "images": n,
        "seconds": wall,
        "images_per_s": n / wall,
        "peak_rss_mb": rss,
        "input_mb": n * 784 / 2**20,
        "output_shape": list(shape),
    }


def format_report(report: dict[str, Any]) -> str:
    engine = report["engine"]
    runs_on = ", ".join(f"{k} {v}" for k, v in engine.items() if k not in ("backend", "auto"))
    lines = [
        f"model {report['model']} ({report['arch']}, latent {report['latent_dim']}, variant "
        f"{report['variant']}), threads {report['threads']}, backend {report['backend']} "
        f"({runs_on})",
    ]
    if "auto" in engine:
        from .auto import summary

        lines.append(f"auto picked: {summary(engine['auto'])}")
    lines.append("")
    head = f"{'op':9} {'batch':>6} {'images/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'GFLOP/s':>8}"
    lines += [head, "-" * len(head)]
    for r in report["throughput"]:
        gf = f"{r['gflops']:8.1f}" if r["gflops"] is not None else f"{'-':>8}"
        lines.append(
            f"{r['op']:9} {r['batch']:6d} {r['images_per_s']:11,.0f} "
            f"{r['p50_ms']:9.3f} {r['p99_ms']:9.3f} {gf}"
        )
    lines += _extra_lines(report)
    lines.append(f"peak RSS of this process: {report['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def _extra_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    o = report.get("batch1_overhead")
    if o:
        lines += [
            "",
            "batch 1, VAE wrapper vs the engine's own call (CPU us per call, medians): "
            f"encode {o['encode_wrapper_us']:.1f} vs {o['encode_bare_us']:.1f} "
            f"({o['encode_overhead_pct']:+.1f}%), decode {o['decode_wrapper_us']:.1f} vs "
            f"{o['decode_bare_us']:.1f} ({o['decode_overhead_pct']:+.1f}%)",
        ]
    c = report.get("cold_start")
    if c:
        lines.append(
            f"cold start (import, load, generate 64; {c['runs']} fresh processes): "
            f"median {c['median_s']:.3f} s, max {c['max_s']:.3f} s, "
            f"peak RSS {c['peak_rss_mb']:.0f} MB"
        )
    s = report.get("streaming")
    if s:
        lines.append(
            f"streaming embed of {s['images']:,} IDX images: {s['seconds']:.1f} s "
            f"({s['images_per_s']:,.0f}/s), peak RSS {s['peak_rss_mb']:.0f} MB "
            f"(input {s['input_mb']:.0f} MB)"
        )
    return lines


def run_bench(
    model: str | None,
    *,
    variant: str | None = None,
    threads: int | None = None,
    batch_sizes: Sequence[int] = (1, 64, 256, 1024),
    budget_s: float = 1.0,
    cold_runs: int = 7,
    stream: int = 0,
    providers: Any = None,
    backend: str = DEFAULT_ENGINE,
    engine_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    vae = VAE(
        model,
        variant=variant,
        backend=backend,
        threads=threads,
        providers=providers,
        batch_size=max(batch_sizes),
        engine_options=engine_options,
    )
    info = vae.info
    report: dict[str, Any] = {
        "model": info["name"],
        "arch": info["arch"],
        "latent_dim": info["latent_dim"],
        "variant": variant,
        "threads": threads or os.cpu_count(),
        "backend": info["backend"],
        "engine": vae.runs_on,
        "throughput": throughput(vae, batch_sizes, budget_s),
    }
    if 1 in batch_sizes:
        report["batch1_overhead"] = wrapper_overhead(vae, budget_s)
    if cold_runs:
        report["cold_start"] = cold_start(model, cold_runs, backend, engine_options)
    if stream:
        report["streaming"] = streaming_embed(model, stream, backend=backend)
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
