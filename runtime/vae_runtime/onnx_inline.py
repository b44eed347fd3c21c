"""Inline an ONNX graph's external data from verified bytes in memory, without onnx/protobuf.

Why: the fp32 graphs keep their weights as ONNX external data inside the checkpoints
(``checkpoints/*.safetensors``). ONNX Runtime takes those bytes from memory
(``add_external_initializers_from_files_in_memory``); OpenVINO's ONNX reader has no such
call: from a path it opens the files the graph names, and its only in-memory form
(location ``*/_ORT_MEM_ADDR_/*``) reads a raw process address from the graph. So the engine
hands OpenVINO a self-contained ModelProto instead: every initializer's external reference
is replaced by ``raw_data`` cut from the manifest-verified bytes, and any other external
reference left in the model is refused. The wire format is vae_format.onnx_wire's, the
reference checks vae_format.graph_policy's (which the runtime has already applied to
these bytes before any engine sees them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vae_format.graph_policy import ELEMENT_BYTES, check_external_data
from vae_format.onnx_wire import LEN, WireError, fields, len_field, parse_model, parse_tensor

from .errors import ModelFormatError

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 9, 13, 14  # TensorProto fields


def _inline_tensor(tensor: bytes, files: Mapping[str, bytes], where: str) -> bytes:
    info = parse_tensor(tensor)
    if not info.is_external:
        return tensor
    check_external_data(info, files, where)  # listed file, offset and length in bounds
    entries = dict(info.external_data)
    offset, size = int(entries.get("offset", "0")), info.elements * ELEMENT_BYTES[info.data_type]
    data = files[entries["location"]][offset : offset + size]
    kept = [
        bytes(raw) for n, _, _, raw in fields(tensor) if n not in (_EXTERNAL_DATA, _DATA_LOCATION)
    ]
    return b"".join(kept) + len_field(_RAW_DATA, data)


def _rewrite(message: bytes, number: int, change: Callable[[bytes], bytes]) -> bytes:
    """``message`` with each length-delimited field ``number`` replaced by change(value)."""
    out = []
    for field, wire, value, raw in fields(message):
        out.append(
            len_field(field, change(bytes(value)))
            if field == number and wire == LEN
            else bytes(raw)
        )
    return b"".join(out)


def inline_external_data(model: bytes, files: Mapping[str, bytes], where: str) -> bytes:
    """``model`` (ModelProto bytes) with every initializer's external data inlined from
    ``files`` (location -> verified bytes). Refuses, naming ``where``, any reference to a
    file outside ``files`` or one left anywhere else in the model (node attributes,
    sparse initializers, subgraphs, functions), so the engine never opens a file itself."""
    try:
        inlined = _rewrite(
            model,
            _MODEL_GRAPH,
            lambda graph: _rewrite(
                graph, _GRAPH_INITIALIZER, lambda t: _inline_tensor(t, files, where)
            ),
        )
        left = any(t.is_external for t in parse_model(inlined).tensors())
    except WireError as exc:
        raise ModelFormatError(f"{where}: cannot inline its external data ({exc})") from None
    if left:
        raise ModelFormatError(
            f"{where}: holds an external-data reference outside the graph's initializers; "
            "refused (the engine would open a file the manifest did not verify)"
        )
    return inlined


def metadata_props(model: bytes, where: str) -> dict[str, str]:
    """ModelProto.metadata_props (key -> value), for engines that do not report them."""
    try:
        return dict(parse_model(model).metadata_props)
    except WireError as exc:
        raise ModelFormatError(f"{where}: not a readable ONNX model ({exc})") from None
