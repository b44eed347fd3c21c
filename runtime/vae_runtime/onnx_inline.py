"""Inline an ONNX graph's external data from verified bytes in memory, without onnx/protobuf.

Why: the fp32 graphs keep their weights as ONNX external data inside the checkpoints
(``checkpoints/*.safetensors``). ONNX Runtime takes those bytes from memory
(``add_external_initializers_from_files_in_memory``); OpenVINO's ONNX reader has no such
call: from a path it opens the files the graph names, and its only in-memory form
(location ``*/_ORT_MEM_ADDR_/*``) reads a raw process address from the graph. So the engine
hands OpenVINO a self-contained ModelProto instead: every initializer's external reference
is replaced by ``raw_data`` cut from the manifest-verified bytes, and any other external
reference left in the graph is refused. The runtime may not import onnx, so this walks the
protobuf wire format itself, and only as deep as it must: ModelProto.graph (7) ->
GraphProto.initializer (5) -> TensorProto.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from .errors import ModelFormatError

_MODEL_GRAPH, _MODEL_METADATA, _GRAPH_INITIALIZER = 7, 14, 5
# TensorProto fields
_DIMS, _DATA_TYPE, _RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 1, 2, 9, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# TensorProto.DataType -> bytes per element, for the types a graph of this project stores
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
# Every external-data entry carries the key "location" (StringStringEntryProto field 1).
_LOCATION_KEY = b"\x0a\x08location"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int, bytes]]:
    """(field number, wire type, value, the field's raw bytes) of one message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value, buf[start:pos]


def len_field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def _dims(value: bytes | int, wire: int) -> list[int]:
    if wire == 0:
        return [int(value)]  # type: ignore[arg-type]
    dims, pos, packed = [], 0, bytes(value)  # type: ignore[arg-type]
    while pos < len(packed):
        dim, pos = _varint(packed, pos)
        dims.append(dim)
    return dims


def _inline_tensor(tensor: bytes, files: Mapping[str, bytes]) -> bytes:
    kept, entries, dims = [], {}, []
    external, dtype, name = False, 0, "?"
    for number, wire, value, raw in _fields(tensor):
        if number == _EXTERNAL_DATA:
            entry = {k: v for k, _, v, _ in _fields(bytes(value))}  # type: ignore[arg-type]
            entries[bytes(entry.get(1, b"")).decode()] = bytes(entry.get(2, b"")).decode()
            continue
        if number == _DATA_LOCATION:
            external = value == _EXTERNAL
            continue
        if number == _DIMS:
            dims += _dims(value, wire)
        elif number == _DATA_TYPE:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == 8:
            name = bytes(value).decode(errors="replace")  # type: ignore[arg-type]
        kept.append(raw)
    if not external:
        if entries:
            raise ValueError(f"initializer {name!r} has external_data but is not EXTERNAL")
        return tensor
    location = entries.get("location")
    if location not in files:
        raise ValueError(
            f"initializer {name!r} reads external data from {location!r}, which is not one of "
            f"the verified files ({', '.join(sorted(files)) or 'none'})"
        )
    data = files[location]
    offset, length = int(entries.get("offset", 0)), entries.get("length")
    want = math.prod(dims) * _ITEM_BYTES.get(dtype, 0)
    if length is None or int(length) != want or not want or offset + want > len(data):
        raise ValueError(
            f"initializer {name!r}: external data (offset {offset}, length {length}) does not "
            f"hold its {dims} elements of type {dtype} inside {location!r}"
        )
    return b"".join(kept) + len_field(_RAW_DATA, data[offset : offset + want])


def _rewrite(message: bytes, number: int, change: Callable[[bytes], bytes]) -> bytes:
    """``message`` with each length-delimited field ``number`` replaced by change(value)."""
    out = []
    for field, wire, value, raw in _fields(message):
        out.append(len_field(field, change(value)) if field == number and wire == 2 else raw)
    return b"".join(out)


def inline_external_data(model: bytes, files: Mapping[str, bytes], where: str) -> bytes:
    """``model`` (ModelProto bytes) with every initializer's external data inlined from
    ``files`` (location -> verified bytes). Refuses, naming ``where``, any reference to a
    file outside ``files`` or one left anywhere else in the graph (node attributes,
    sparse initializers, functions), so the engine never opens a file itself."""
    try:
        inlined = _rewrite(
            model,
            _MODEL_GRAPH,
            lambda graph: _rewrite(
                bytes(graph), _GRAPH_INITIALIZER, lambda t: _inline_tensor(bytes(t), files)
            ),
        )
    except ValueError as exc:
        raise ModelFormatError(f"{where}: cannot inline its external data ({exc})") from None
    if _LOCATION_KEY in inlined:
        raise ModelFormatError(
            f"{where}: holds an external-data reference outside the graph's initializers; "
            "refused (the engine would open a file the manifest did not verify)"
        )
    return inlined


def metadata_props(model: bytes, where: str) -> dict[str, str]:
    """ModelProto.metadata_props (key -> value), for engines that do not report them."""
    props = {}
    try:
        for number, wire, value, _ in _fields(model):
            if number == _MODEL_METADATA and wire == 2:
                entry = {k: bytes(v) for k, _, v, _ in _fields(bytes(value))}  # type: ignore[arg-type]
                props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{where}: not a readable ONNX model ({exc})") from None
    return props
