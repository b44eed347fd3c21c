"""What can run a model's graphs on this machine, and how fast: the (backend, graphs,
precision) combinations that ``vae-run bench --compare`` measures and ``backend="auto"``
chooses among, and the one timing primitive both use (CPU time of this process, robust on
a shared, loaded machine)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae_format import Manifest

from .engines import ENGINES, Engine, GraphRunner, create_engine

CPU_VARIANTS_SKIPPED = ("fp16",)  # made for CUDA: on a CPU it only measures a fallback
ROLES = ("encoder", "decoder")
Runners = dict[str, GraphRunner]


@dataclass(frozen=True)
class Contender:
    """What runs: a backend, the graphs (a variant's, None: the fp32 graphs), the arithmetic
    (``precision``: fp32, bf16, int8) and the engine options that make it so. ``loader``
    (for contenders that are not engines, e.g. PyTorch) returns the runners itself."""

    backend: str
    variant: str | None
    precision: str
    options: tuple[tuple[str, Any], ...] = ()
    note: str = ""
    loader: Callable[[], Runners] | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        graphs = f" [{self.variant} graphs]" if self.variant not in (None, self.precision) else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.backend} {self.precision}{graphs}{note}"


def openvino_available() -> bool:
    return "openvino" in ENGINES and importlib.util.find_spec("openvino") is not None


def openvino_precisions() -> tuple[str, ...]:
    """f32, and bf16 where OpenVINO's CPU plugin runs it natively."""
    import openvino as ov

    from .engines.openvino import machine_precision

    return tuple(dict.fromkeys(("f32", machine_precision(ov.Core()))))


def engine_contenders(
    manifest: Manifest,
    precisions: Sequence[str] | None = None,
    static_batches: Sequence[int] = (8,),
) -> list[Contender]:
    """ONNX Runtime on the fp32 graphs and each CPU variant; OpenVINO (where installed) on
    the fp32 graphs at each of ``precisions`` (None: f32 and the machine's bf16) and on the
    int8 variant, once per ``static_batches`` setting (0: dynamic shapes only)."""
    variants = [v for v in sorted(manifest.variants) if v not in CPU_VARIANTS_SKIPPED]
    found = [Contender("onnxruntime", None, "fp32")]
    found += [Contender("onnxruntime", v, v) for v in variants]
    if not openvino_available():
        return found
    precisions = precisions or openvino_precisions()  # OpenVINO's names: f32, bf16
    for static in static_batches:
        note = "dynamic shapes" if static == 0 else f"static shapes x{static}"
        shapes = (("static_batches", static),)
        for p in precisions:
            name = "fp32" if p == "f32" else p
            found.append(Contender("openvino", None, name, (("precision", p), *shapes), note))
        # The int8 graphs' float nodes (the encoder's one-channel conv1, the sigmoid) run at
        # the last precision asked for: by default the machine's, as VAE(backend="openvino",
        # variant="int8") runs them.
        best = precisions[-1]
        int8_note = f"{note}, float nodes {best}" if best != "f32" else note
        found += [Contender("openvino", v, v, (("precision", best), *shapes), int8_note)
                  for v in variants if v == "int8"]  # fmt: skip
    return found


def engine_for(
    c: Contender, manifest: Manifest, threads: int | None, ort_options: dict[str, Any] | None = None
) -> Engine:
    """The engine that runs contender ``c`` with ``threads`` threads (None: its default);
    ``ort_options`` (e.g. spinning) go to ONNX Runtime engines only."""
    options: dict[str, Any] = dict(c.options)
    if threads is not None:
        options["threads"] = threads
    if c.backend == "onnxruntime":
        options.update(ort_options or {})
    return create_engine(c.backend, options, manifest.session(c.variant))


def rates(fn: Callable[[], Any], batch: int, budget_s: float) -> tuple[float, float]:
    """(images per wall second, images per CPU-second of this process) of ``fn`` over about
    ``budget_s`` seconds, after one untimed call."""
    fn()
    calls, c0, w0 = 0, time.process_time(), time.perf_counter()
    while calls < 3 or time.perf_counter() - w0 < budget_s:
        fn()
        calls += 1
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return batch * calls / wall, batch * calls / max(cpu, 1e-9)


def feeds_for(batch: int, latent_dim: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """role -> random inputs of ``batch`` rows (images in [0, 1], N(0, I) latents)."""
    rng = np.random.default_rng(seed)
    return {
        "encoder": {"x": rng.random((batch, 1, 28, 28), dtype=np.float32)},
        "decoder": {"z": rng.standard_normal((batch, latent_dim), np.float32)},
    }
