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

/** config.head_output: the graph's name for output `name` of the `task` head in a package with several heads. */
export function headOutput(task, name) {
  return `${task}/${name}`;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** `value` with every object's keys sorted, so that JSON.stringify compares objects field by field. */
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (!isObject(value)) return value;
  return Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])]));
}

/** What the page relies on in one task's config (format `version`); `where` names it in the error. */
function checkHead(config, version, where) {
  if (!isObject(config)) throw new Error(`${where} is not an object`);
  if (config.format_version !== version) {
    throw new Error(`${where} has format_version ${config.format_version}, expected ${version}`);
  }
  if (typeof config.task !== "string" || !config.task) throw new Error(`${where} has no task`);
  if (!Array.isArray(config.labels) || !config.labels.length) throw new Error(`${where} has no labels`);
  if (!isObject(config.preprocess)) throw new Error(`${where} has no preprocess`);
  return config;
}

/** config.package_heads: each head's config by task; the heads share the graph's input, so their preprocess too. */
function packageHeads(config, versions, where) {
  if (config.format_version === versions.single) {
    const head = checkHead(config, versions.single, where);
    return { [head.task]: head };
  }
  if (config.format_version !== versions.heads) {
    throw new Error(
      `${where} has format_version ${config.format_version}, this page reads ${versions.single} and ${versions.heads}`,
    );
  }
  const unknown = Object.keys(config).filter((k) => !["format_version", "heads"].includes(k));
  if (unknown.length) throw new Error(`${where} has a head per task and also ${unknown}`);
  if (!Array.isArray(config.heads) || !config.heads.length) throw new Error(`${where} has no heads`);
  const heads = {};
  config.heads.forEach((head, i) => {
    checkHead(head, versions.single, `${where}, heads[${i}],`);
    if (Object.hasOwn(heads, head.task)) throw new Error(`${where} has a second head for task ${head.task}`);
    const first = Object.values(heads)[0] ?? head;
    if (JSON.stringify(canonical(head.preprocess)) !== JSON.stringify(canonical(first.preprocess))) {
      throw new Error(`${where}: the ${head.task} head's preprocess differs from the ${first.task} head's`);
    }
    heads[head.task] = head;
  });
  return heads;
}

/**
 * The package configs embedded under `key`, checked as serving checks them (config.package_heads): {configs: each
 * head's config by task, several: whether the graph names its outputs per head (headOutput)}. `tasks`: the tasks
 * the file is served for, each of which must be one of its heads; `versions`: {single, heads}, manifest.json's
 * format_version and heads_format_version.
 */
export function embeddedConfigs(buffer, key, { tasks, versions }) {
  const where = `the ${tasks.join(" + ")} model`;
  const raw = onnxMetadata(buffer)[key];
  if (raw === undefined) throw new Error(`${where} has no ${key} entry in its ONNX metadata`);
  const config = JSON.parse(raw);
  if (!isObject(config)) throw new Error(`${where}'s ${key} is not a JSON object`);
  const configs = packageHeads(config, versions, `${where}'s config`);
  for (const task of tasks) {
    if (!Object.hasOwn(configs, task)) {
      throw new Error(`${where} is served for ${task}; its config answers ${Object.keys(configs)}`);
    }
  }
  return { configs, several: config.format_version === versions.heads };
}
