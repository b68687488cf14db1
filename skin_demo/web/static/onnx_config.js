// Read a model package's config from the ONNX file itself (ModelProto.metadata_props, key "skin_demo.config"), the
// copy that serving reads too, so the page never needs its own idea of sizes, normalisation, labels or thresholds.
// ONNX Runtime Web does not expose custom metadata, and the protobuf needed is tiny: walk the top-level fields of
// ModelProto, skipping everything by its length, and decode the StringStringEntryProto messages of field 14.

const METADATA_PROPS = 14; // ModelProto.metadata_props
const KEY = 1;
const VALUE = 2;

function readVarint(bytes, state) {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (state.pos >= bytes.length) throw new Error("truncated ONNX file");
    const b = bytes[state.pos++];
    result += (b & 0x7f) * 2 ** shift; // no bit operators: lengths of large graphs exceed 31 bits of shift
    if (b < 0x80) return result;
    shift += 7;
    if (shift > 63) throw new Error("bad varint in ONNX file");
  }
}

function* fields(bytes, start, end) {
  const state = { pos: start };
  while (state.pos < end) {
    const tag = readVarint(bytes, state);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      readVarint(bytes, state);
    } else if (wire === 1) {
      state.pos += 8;
    } else if (wire === 5) {
      state.pos += 4;
    } else if (wire === 2) {
      const length = readVarint(bytes, state);
      const from = state.pos;
      state.pos += length;
      if (state.pos > end) throw new Error("truncated ONNX file");
      yield { field, from, to: state.pos };
    } else {
      throw new Error(`unsupported protobuf wire type ${wire} in ONNX file`);
    }
  }
}

/** All metadata_props of an ONNX model as {key: value}. */
export function onnxMetadata(buffer) {
  const bytes = new Uint8Array(buffer);
  const text = new TextDecoder("utf-8");
  const out = {};
  for (const entry of fields(bytes, 0, bytes.length)) {
    if (entry.field !== METADATA_PROPS) continue;
    let key = "";
    let value = "";
    for (const part of fields(bytes, entry.from, entry.to)) {
      const s = text.decode(bytes.subarray(part.from, part.to));
      if (part.field === KEY) key = s;
      else if (part.field === VALUE) value = s;
    }
    out[key] = value;
  }
  return out;
}

/** The package config embedded under `key`, checked the way serving checks it (format version, task). */
export function embeddedConfig(buffer, key, { task, formatVersion }) {
  const raw = onnxMetadata(buffer)[key];
  if (raw === undefined) throw new Error(`the ${task} model has no ${key} entry in its ONNX metadata`);
  const config = JSON.parse(raw);
  if (config.format_version !== formatVersion) {
    throw new Error(`the ${task} model has format_version ${config.format_version}, this page reads ${formatVersion}`);
  }
  if (config.task !== task) throw new Error(`the model served as ${task} says its task is ${config.task}`);
  return config;
}
