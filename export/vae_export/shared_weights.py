"""Let a graph read its weights from the safetensors checkpoint shipped beside it.

A model directory carries both the graphs and their source checkpoints (so parity can be
re-checked from the directory alone). Stored twice, the fp32 weights would double every
directory's size; instead each initializer whose bytes equal a checkpoint tensor becomes
ONNX external data pointing at that tensor's bytes inside the .safetensors file (both
formats store raw little-endian arrays). Initializers the exporter created itself (the
phase-form kernels, reshape constants) stay inline.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
from onnx import numpy_helper

_SAFETENSORS_DTYPES = {"F32": onnx.TensorProto.FLOAT}


def tensor_index(
    safetensors_bytes: bytes,
) -> dict[tuple[int, tuple[int, ...], str], tuple[int, int]]:
    """(onnx dtype, shape, sha256 of data) -> (byte offset in the file, byte length)."""
    header_len = int.from_bytes(safetensors_bytes[:8], "little")
    header = json.loads(safetensors_bytes[8 : 8 + header_len])
    base = 8 + header_len
    index = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in _SAFETENSORS_DTYPES:
            continue
        start, end = info["data_offsets"]
        digest = hashlib.sha256(safetensors_bytes[base + start : base + end]).hexdigest()
        key = (_SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]), digest)
        index[key] = (base + start, end - start)
    return index


def share_weights(model: onnx.ModelProto, safetensors_bytes: bytes, location: str) -> int:
    """Point matching initializers at ``location`` (relative to the graph); returns how many."""
    index = tensor_index(safetensors_bytes)
    shared = 0
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        data = np.ascontiguousarray(numpy_helper.to_array(init)).astype("<f4", copy=False)
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data.tobytes()).hexdigest())
        if key not in index:
            continue
        offset, length = index[key]
        for field in ("raw_data", "float_data"):
            init.ClearField(field)
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        shared += 1
    return shared
