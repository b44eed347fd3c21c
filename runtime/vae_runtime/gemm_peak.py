"""What these cores deliver on one large float32 matrix product, through the engines that
run the graphs (for `vae-run bench --compare`'s "share of peak" columns).

Measured with the engines themselves, not numpy or torch: their BLAS may not recognise the
CPU (OpenBLAS 0.3.31 and MKL run AVX2 kernels on AMD family 1Ah, half the AVX-512 rate
MLAS reaches). The one-node MatMul graph is written here in the ONNX wire format, since
the runtime does not import onnx.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vae_format.onnx_wire import len_field, varint_field

N = 1024


def _value_info(name: str, n: int) -> bytes:
    dims = b"".join(len_field(1, varint_field(1, n)) for _ in range(2))  # Dimension.dim_value
    tensor = varint_field(1, 1) + len_field(2, dims)  # elem_type FLOAT, shape
    return len_field(1, name.encode()) + len_field(2, len_field(1, tensor))


def matmul_model(n: int = N) -> bytes:
    """ModelProto bytes of c = a @ b, float32 (n, n) inputs (opset 13, IR version 8)."""
    node = (len_field(1, b"a") + len_field(1, b"b") + len_field(2, b"c")
            + len_field(4, b"MatMul"))  # fmt: skip
    graph = (len_field(1, node) + len_field(2, b"gemm_peak") + len_field(11, _value_info("a", n))
             + len_field(11, _value_info("b", n)) + len_field(12, _value_info("c", n)))  # fmt: skip
    return varint_field(1, 8) + len_field(8, varint_field(2, 13)) + len_field(7, graph)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _best_gflops(run: Any, n: int, budget_s: float, clock: str = "cpu") -> float:
    """Best rate over ``budget_s`` seconds. Per second of this process's CPU time by default:
    on a loaded, shared machine wall time measures the neighbours more than the cores
    ("wall": per second of wall time, for wall-clock tables at several threads)."""
    tick = CLOCKS[clock]
    run()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t = tick()
        run()
        best = min(best, tick() - t)
    return 2 * n**3 / max(best, 1e-9) / 1e9


def ort_peak(threads: int, n: int = N, budget_s: float = 0.5, clock: str = "cpu") -> float:
    """float32 GFLOP per CPU-second (or per wall second) of ONNX Runtime's MatMul (MLAS)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(matmul_model(n), options, providers=["CPUExecutionProvider"])
    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    return _best_gflops(lambda: session.run(None, {"a": a, "b": b}), n, budget_s, clock)


def openvino_peak(threads: int, precision: str, n: int = N, budget_s: float = 0.5) -> float:
    """GFLOP per CPU-second of OpenVINO's MatMul at ``precision`` ("f32" or "bf16": the
    bf16 peak where the CPU has AVX512_BF16 or AMX)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
              "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
    request = core.compile_model(core.read_model(matmul_model(n)), "CPU", config)
    infer = request.create_infer_request()
    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    return _best_gflops(lambda: infer.infer({"a": a, "b": b}, share_inputs=True), n, budget_s)
