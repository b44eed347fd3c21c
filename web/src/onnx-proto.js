// Just enough of the ONNX protobuf to check a graph before ONNX Runtime sees it: which files
// its tensors read as external data (ModelProto -> graphs -> TensorProto.external_data) and
// its metadata_props. Everything else is skipped by length, so a few-MB graph takes
// microseconds. Field numbers are those of onnx/onnx.proto3.

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const MODEL = { graph: 7, metadataProps: 14, functions: 25 };
const GRAPH = { node: 1, initializer: 5, sparseInitializer: 15 };
const NODE = { attribute: 5 };
const ATTRIBUTE = { t: 5, g: 6, tensors: 10, graphs: 11, sparseTensor: 22, sparseTensors: 23 };
const SPARSE = { values: 1, indices: 2 };
const TENSOR = { externalData: 13 };
const ENTRY = { key: 1, value: 2 };
const FUNCTION = { node: 3 };

class ProtoError extends Error {}

function readVarint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= bytes.length) throw new ProtoError('truncated varint');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
  throw new ProtoError('varint longer than 10 bytes');
}

/** Calls visit(field, bytes, start, end) for each length-delimited field of one message. */
function eachField(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === WIRE_VARINT) [, pos] = readVarint(bytes, pos);
    else if (wire === WIRE_I64) pos += 8;
    else if (wire === WIRE_I32) pos += 4;
    else if (wire === WIRE_LEN) {
      let length;
      [length, pos] = readVarint(bytes, pos);
      if (pos + length > end) throw new ProtoError(`field ${field} runs past its message`);
      visit(field, bytes, pos, pos + length);
      pos += length;
    } else throw new ProtoError(`unsupported wire type ${wire}`);
  }
  if (pos !== end) throw new ProtoError('message ends inside a field');
}

const decoder = new TextDecoder('utf-8', { fatal: true });

function entry(bytes, start, end) {
  const out = { key: '', value: '' };
  eachField(bytes, start, end, (f, b, s, e) => {
    if (f === ENTRY.key) out.key = decoder.decode(b.subarray(s, e));
    else if (f === ENTRY.value) out.value = decoder.decode(b.subarray(s, e));
  });
  return out;
}

function scanTensor(bytes, start, end, locations) {
  eachField(bytes, start, end, (f, b, s, e) => {
    if (f !== TENSOR.externalData) return;
    const { key, value } = entry(b, s, e);
    if (key === 'location') locations.add(value);
  });
}

function scanSparse(bytes, start, end, locations) {
  eachField(bytes, start, end, (f, b, s, e) => {
    if (f === SPARSE.values || f === SPARSE.indices) scanTensor(b, s, e, locations);
  });
}

function scanNode(bytes, start, end, locations) {
  eachField(bytes, start, end, (f, b, s, e) => {
    if (f !== NODE.attribute) return;
    eachField(b, s, e, (af, ab, as, ae) => {
      if (af === ATTRIBUTE.t || af === ATTRIBUTE.tensors) scanTensor(ab, as, ae, locations);
      else if (af === ATTRIBUTE.g || af === ATTRIBUTE.graphs) scanGraph(ab, as, ae, locations);
      else if (af === ATTRIBUTE.sparseTensor || af === ATTRIBUTE.sparseTensors) {
        scanSparse(ab, as, ae, locations);
      }
    });
  });
}

function scanGraph(bytes, start, end, locations) {
  eachField(bytes, start, end, (f, b, s, e) => {
    if (f === GRAPH.initializer) scanTensor(b, s, e, locations);
    else if (f === GRAPH.sparseInitializer) scanSparse(b, s, e, locations);
    else if (f === GRAPH.node) scanNode(b, s, e, locations);
  });
}

/**
 * The external-data locations and the metadata_props of a serialized ModelProto.
 * @param {Uint8Array} bytes
 * @returns {{locations: string[], metadata: Record<string, string>}}
 * @throws {Error} when the bytes are not a well-formed protobuf message
 */
export function inspectModel(bytes) {
  const locations = new Set();
  const metadata = {};
  try {
    eachField(bytes, 0, bytes.length, (f, b, s, e) => {
      if (f === MODEL.graph) scanGraph(b, s, e, locations);
      else if (f === MODEL.functions) {
        eachField(b, s, e, (ff, fb, fs, fe) => {
          if (ff === FUNCTION.node) scanNode(fb, fs, fe, locations);
        });
      } else if (f === MODEL.metadataProps) {
        const { key, value } = entry(b, s, e);
        metadata[key] = value;
      }
    });
  } catch (err) {
    if (err instanceof ProtoError || err instanceof TypeError) {
      throw new Error(`not an ONNX model (${err.message})`);
    }
    throw err;
  }
  return { locations: [...locations], metadata };
}
