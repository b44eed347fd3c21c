"""Research benchmark for issue 16: every engine x graph x precision on one model, alternating.

Prints images per CPU-second (process CPU time, so a loaded shared machine skews it far less
than wall time) and wall images/s, median over rounds; each round runs every contender once
for ``--budget`` seconds, so drift in machine load hits them alike. Threads are limited to
``--threads`` everywhere (ORT intra-op, OpenVINO INFERENCE_NUM_THREADS, torch).

    .venv/bin/python scripts/bench_engines.py artifacts/mnist-conv-z20 --batch 1 64 256 1024

Contender names: ort-fp32, ort-int8 (the model's int8 graphs), ort-int8new (those in
``--int8-dir``), ``@extended`` etc. = that ORT optimization level, ``#128`` = ORT runs of at
most 128 rows (the engine's rows_per_run; default: the whole batch in one run); ov-f32, ov-bf16,
ov-int8, ov-int8new (dynamic batch; ``+static`` = compiled per batch size; ``@bf16`` = the
precision hint for OpenVINO's float nodes, default f32); torch-fp32,
torch-bf16 (autocast, channels_last).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _ort(graph: Path, external: dict[str, bytes], threads: int, level: str = "all",
         spinning: bool = False) -> Any:  # fmt: skip
    import onnxruntime as ort

    from vae_runtime.engines.ort import session_options

    opts = session_options(threads, level, spinning)
    if external:
        names = list(external)
        opts.add_external_initializers_from_files_in_memory(
            names, [external[n] for n in names], [len(external[n]) for n in names]
        )
    return ort.InferenceSession(graph.read_bytes(), opts, providers=["CPUExecutionProvider"])


def _ov_model(graph: Path, external: dict[str, bytes]) -> Any:
    import openvino as ov

    from vae_runtime.onnx_inline import inline_external_data

    return ov.Core().read_model(inline_external_data(graph.read_bytes(), external, graph.name))


def _ov_compile(model: Any, precision: str, threads: int, batch: int | None = None) -> Any:
    import openvino as ov

    if batch is not None:
        model = model.clone()
        model.reshape({model.inputs[0]: [batch, *list(model.inputs[0].partial_shape)[1:]]})
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
              "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
    return ov.Core().compile_model(model, "CPU", config)


def contenders(model_dir: Path, names: list[str], threads: int, batches: list[int],
               int8_dir: Path | None, level: str) -> dict[str, dict[str, Callable]]:  # fmt: skip
    """name -> role -> make(batch) -> a no-argument call running that batch."""
    from vae_format import Manifest, read_verified

    m = Manifest.load(model_dir)
    ext = {r: {f: read_verified(m, f) for f in m.external_files(r)} for r in ("encoder", "decoder")}
    fp32 = {r: model_dir / m.graphs[r] for r in ext}
    int8 = {r: model_dir / f"{r}.int8.onnx" for r in ext}
    new8 = {r: (int8_dir or model_dir) / f"{r}.int8.onnx" for r in ext}
    rng = np.random.default_rng(0)
    inputs = {
        b: {"encoder": rng.random((b, 1, 28, 28), dtype=np.float32),
            "decoder": rng.standard_normal((b, m.latent_dim), dtype=np.float32)}
        for b in batches
    }  # fmt: skip
    out: dict[str, dict[str, Callable]] = {}
    for name in names:
        spec, _, rows = name.partition("#")
        engine, _, rest = spec.partition("-")
        kind, _, static = rest.partition("+")
        kind, _, lvl = kind.partition("@")
        out[name] = {}
        for role in ("encoder", "decoder"):
            feed = "x" if role == "encoder" else "z"
            graph = {"int8": int8, "int8new": new8}.get(kind, fp32)[role]
            weights = {} if kind.startswith("int8") else ext[role]
            if engine == "ort":
                s = _ort(graph, weights, threads, lvl or level)
                out[name][role] = partial(_ort_call, s, feed, role, inputs, int(rows or 0))
            elif engine == "ov":
                model = _ov_model(graph, weights)
                precision = lvl or ("bf16" if kind == "bf16" else "f32")
                if static:
                    compiled = {b: _ov_compile(model, precision, threads, b) for b in batches}
                else:
                    c = _ov_compile(model, precision, threads)
                    compiled = dict.fromkeys(batches, c)
                reqs = {b: c.create_infer_request() for b, c in compiled.items()}
                out[name][role] = lambda b, reqs=reqs, role=role: (
                    lambda: reqs[b].infer({0: inputs[b][role]}, share_inputs=True)
                )
            elif engine == "torch":
                out[name][role] = _torch_call(model_dir, role, kind, inputs, threads)
            else:
                raise SystemExit(f"unknown contender {name}")
    return out


def _ort_call(session: Any, feed: str, role: str, inputs: dict, rows: int, b: int) -> Callable:
    """A call running batch ``b`` in ORT runs of at most ``rows`` rows (0: one run)."""
    x = inputs[b][role]
    if not rows or b <= rows:
        return lambda: session.run(None, {feed: x})
    return lambda: [session.run(None, {feed: x[i : i + rows]}) for i in range(0, b, rows)]


def _torch_call(model_dir: Path, role: str, kind: str, inputs: dict, threads: int) -> Callable:
    import torch

    from vae_export.verify import model_checkpoint

    torch.set_num_threads(threads)
    ckpt = model_checkpoint(model_dir, "bench")
    module = (ckpt.encoder if role == "encoder" else ckpt.decoder).eval()
    if kind == "bf16":
        module = module.to(memory_format=torch.channels_last)

    def make(b: int) -> Callable:
        x = torch.from_numpy(inputs[b][role])
        if kind == "bf16" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)

        def call() -> Any:
            with torch.inference_mode():
                if kind == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return module(x)
                return module(x)

        return call

    return make


def measure(fn: Callable, budget: float) -> tuple[float, float, int]:
    """(cpu seconds per call, wall seconds per call, calls) over about ``budget`` seconds."""
    fn()
    calls = 0
    c0, w0 = time.process_time(), time.perf_counter()
    while calls < 3 or time.perf_counter() - w0 < budget:
        fn()
        calls += 1
    return (time.process_time() - c0) / calls, (time.perf_counter() - w0) / calls, calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--contenders", nargs="+",
                   default=["ort-fp32", "ort-int8", "ov-f32", "ov-bf16", "ov-int8",
                            "torch-fp32", "torch-bf16"])  # fmt: skip
    p.add_argument("--batch", nargs="+", type=int, default=[1, 64, 256, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget", type=float, default=0.25)
    p.add_argument("--ops", nargs="+", default=["encoder", "decoder"])
    p.add_argument("--int8-dir", type=Path, help="folder with other encoder/decoder.int8.onnx")
    p.add_argument("--level", default="all", help="ORT optimization level for ort-* contenders")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    calls = contenders(a.model_dir, a.contenders, a.threads, a.batch, a.int8_dir, a.level)
    flops = _flops(a.model_dir)
    print(f"{a.model_dir.name}: {a.threads} thread(s), {a.rounds} rounds x {a.budget}s, "
          f"cpu: {_cpu_name()}, load avg {os.getloadavg()[0]:.2f}")  # fmt: skip
    for role in a.ops:
        for b in a.batch:
            fns = {n: calls[n][role](b) for n in a.contenders}
            cpu: dict[str, list] = {n: [] for n in fns}
            wall: dict[str, list] = {n: [] for n in fns}
            for _ in range(a.rounds):
                for n, fn in fns.items():
                    c, w, _ = measure(fn, a.budget)
                    cpu[n].append(c)
                    wall[n].append(w)
            base = statistics.median(cpu[a.contenders[0]])
            for n in fns:
                c, w = statistics.median(cpu[n]), statistics.median(wall[n])
                gf = flops[role] * b / c / 1e9
                print(f"{role[:3]} b={b:5d} {n:18s} {b / c:10,.0f} img/cpu-s {b / w:10,.0f} "
                      f"img/s  {gf:6.1f} GFLOP/cpu-s  x{base / c:5.2f}")  # fmt: skip
            print()


def _flops(model_dir: Path) -> dict[str, int]:
    import json

    g = json.loads((model_dir / "manifest.json").read_text())["graphs"]
    return {r: int(g[r]["flops_per_image"]) for r in ("encoder", "decoder")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()
