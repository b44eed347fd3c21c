"""The OpenVINO engine (``VAE(path, backend="openvino")``; ``pip install 'vae-onnx[openvino]'``).

Same graphs, same verified bytes: OpenVINO's ONNX reader cannot take external data from
memory (given bytes, it opens the files the graph names relative to the working
directory), so the graph is first made self-contained from the verified checkpoint bytes
(:func:`vae_runtime.onnx_inline.inline_external_data`) and OpenVINO never opens a file.

Precision: ``precision=None`` picks bf16 where the CPU plugin offers it (AVX512_BF16 or
AMX: bf16 in OPTIMIZATION_CAPABILITIES, which is also OpenVINO's own default there) and
f32 elsewhere; "f32" or "bf16" overrides. int8 graphs (QDQ) run in int8 whatever the
hint. Measured on a 2-core AMD EPYC (family 1Ah, AVX512_BF16, no AMX), 1 thread, batch
256: bf16 runs 1.8-2.0x f32 and moves the test negative ELBO by 0.002-0.005 nats on the
shipped models (budget 0.5; docs/performance.md).

Batch shapes: a graph compiled for a fixed batch size ran 1.1-1.3x faster at batch 1-64
in float and up to 1.6x faster for the int8 decoder at 256; ``static_batches`` (default 8)
compiled shapes are kept per graph, least recently used first out, for batches up to
STATIC_MAX (a compile takes about 0.1 s, on first use of that size), and the
dynamic-batch compile serves the rest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ..errors import InputError, ModelFormatError
from ..onnx_inline import inline_external_data, metadata_props
from .base import TensorInfo

NAME = "openvino"
OPTIONS = ("threads", "precision", "static_batches")
PRECISIONS = ("f32", "bf16")
STATIC_MAX = 1024  # larger batches run on the dynamic compile (no faster static, measured)


def create(options: Mapping[str, Any], session: Mapping[str, str] | None = None) -> OpenVINOEngine:
    """The engine with ``options``. ``session`` (a variant's ONNX Runtime optimization
    levels) does not apply: OpenVINO fuses QDQ graphs with its own transformations."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(
            f"backend 'openvino' has no option {', '.join(unknown)}; "
            f"its options: {', '.join(OPTIONS)}"
        )
    return OpenVINOEngine(**options)


def machine_precision(core: ov.Core) -> str:
    """bf16 where the CPU plugin can run it natively, else f32."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


class OpenVINOEngine:
    name = NAME

    def __init__(
        self, threads: int | None = None, precision: str | None = None, static_batches: int = 8
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 0):  # fmt: skip
            raise InputError(f"threads must be an integer >= 0 (0 = all cores), got {threads!r}")
        if precision is not None and precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if (
            isinstance(static_batches, bool)
            or not isinstance(static_batches, int)
            or (static_batches < 0)
        ):
            raise InputError(f"static_batches must be an integer >= 0, got {static_batches!r}")
        self._core = ov.Core()
        self.precision = precision or machine_precision(self._core)
        self.precision_chosen_by = "argument" if precision else "machine"
        self.threads = threads
        self.static_batches = static_batches
        self.config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the caller's batch is the parallelism
            "NUM_STREAMS": 1,
            # The machine is shared: pinned threads cannot move away from a busy core.
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads

    def load(self, graph: bytes, external: Mapping[str, bytes], where: Path) -> OpenVINORunner:
        data = inline_external_data(graph, external, str(where))
        try:
            model = self._core.read_model(data)
            compiled = self._core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # OpenVINO raises plain RuntimeError with C++ context
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelFormatError(f"{where}: OpenVINO cannot load it ({reason})") from None
        return OpenVINORunner(self, model, compiled, metadata_props(graph, str(where)))

    def describe(self) -> dict[str, Any]:
        return {
            "openvino": ov.get_version(),
            "device": self._core.get_property("CPU", "FULL_DEVICE_NAME"),
            "precision": self.precision,
            "precision_chosen_by": self.precision_chosen_by,
            "threads": self.threads,
            "static_batches": self.static_batches,
        }

    def compile_static(self, model: ov.Model, batch: int) -> ov.CompiledModel:
        fixed = model.clone()
        fixed.reshape({p.get_any_name(): [batch, *p.get_partial_shape()[1:]]
                       for p in fixed.inputs})  # fmt: skip
        return self._core.compile_model(fixed, "CPU", self.config)


class OpenVINORunner:
    """One compiled graph; per-thread infer requests make ``run`` thread-safe."""

    def __init__(self, engine: OpenVINOEngine, model: ov.Model, compiled: ov.CompiledModel,
                 metadata: dict[str, str]) -> None:  # fmt: skip
        self._engine = engine
        self._model = model
        self._dynamic = compiled
        self._static: OrderedDict[int, ov.CompiledModel] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()
        # The read model's ports carry the ONNX names; compiling may fuse names onto them.
        self.inputs = [_tensor_info(p) for p in model.inputs]
        self.outputs = [_tensor_info(p) for p in model.outputs]
        self.metadata = metadata
        self._output_index = {n: i for i, p in enumerate(model.outputs) for n in p.get_names()}

    def _compiled(self, batch: int) -> ov.CompiledModel:
        if not self._engine.static_batches or batch > STATIC_MAX:
            return self._dynamic
        with self._lock:
            if batch in self._static:
                self._static.move_to_end(batch)
                return self._static[batch]
        compiled = self._engine.compile_static(self._model, batch)  # outside the lock: ~0.1 s
        with self._lock:
            self._static[batch] = compiled
            while len(self._static) > self._engine.static_batches:
                self._static.popitem(last=False)
        return compiled

    def _request(self, compiled: ov.CompiledModel) -> ov.InferRequest:
        """This thread's infer request for ``compiled``; requests of compiles that left the
        cache are dropped, so they do not keep those compiles alive."""
        requests: dict[int, tuple[ov.CompiledModel, ov.InferRequest]]
        requests = self._local.__dict__.setdefault("requests", {})
        key = id(compiled)
        if key not in requests or requests[key][0] is not compiled:
            with self._lock:
                live = {id(c) for c in self._static.values()} | {id(self._dynamic)}
            for stale in [k for k in requests if k not in live]:
                del requests[stale]
            requests[key] = (compiled, compiled.create_infer_request())
        return requests[key][1]

    def infer_request(self, batch: int) -> ov.InferRequest:
        """This thread's infer request for ``batch`` rows (what ``run`` calls)."""
        return self._request(self._compiled(batch))

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
            ) -> list[np.ndarray]:  # fmt: skip
        batch = len(next(iter(feeds.values())))
        request = self._request(self._compiled(batch))
        results = request.infer(dict(feeds), share_inputs=True, share_outputs=False)
        values = list(results.values())
        if output_names is None:
            return values
        return [values[self._output_index[name]] for name in output_names]

    def describe(self) -> dict[str, Any]:
        with self._lock:
            static = sorted(self._static)
        return {"static_shapes_compiled": static,
                "execution_precision": _runtime_precision(self._dynamic)}  # fmt: skip


def _tensor_info(port: Any) -> TensorInfo:
    shape = port.get_partial_shape()
    dims: tuple[int | str | None, ...] | None = None
    if shape.rank.is_static:
        dims = tuple(d.get_length() if d.is_static else None for d in shape)
    return TensorInfo(port.get_any_name(), dims, port.get_element_type().to_dtype().name)


def _runtime_precision(compiled: ov.CompiledModel) -> dict[str, int]:
    """How many executed nodes run in each precision (what OpenVINO actually chose)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and info["layerType"].astype(str) in _COUNTED:
            name = info["runtimePrecision"].astype(str)
            counts[name] = counts.get(name, 0) + 1
    return counts


_COUNTED = ("Convolution", "FullyConnected", "MatMul", "Deconvolution")
