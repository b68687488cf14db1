// The on-device flow: load ONNX Runtime Web and the packages the server uses (from this origin only, cached for
// offline use; a package with a head per task is one file, one session and one run for all its tasks), then analyse
// an image exactly as the server does (imaging.load_image + preprocess, Predictor, postprocess) and answer with
// /predict's keys. Everything specific to a model (labels, thresholds per domain, what each domain's call is made on)
// comes from its embedded config; everything specific to this app (messages, the words for each call, the rule's
// names, limits, display names, the disclaimer) from manifest.json, which the Python side writes from its own
// constants.

import { embeddedConfigs, headOutput } from "./onnx_config.js";
import { cropGeometry, preprocess, reduce, rgbOf, shorterSide } from "./preprocess.js";

export const CACHE_NAME = "skin-demo-on-device-v1"; // sw.js uses the same name

export class ImageError extends Error {
  constructor(message) {
    super(message);
    this.name = "ImageError";
  }
}

/** Messages worded as skin_demo.imaging words them (tests/test_on_device.py compares the two). */
function sizeProblem(width, height, limits) {
  if (width * height > limits.max_pixels) {
    return (
      `the image is too large (${width}x${height}); the limit is ${Math.round(limits.max_pixels / 1e6)} megapixels ` +
      "(resize it or upload a normal photo)"
    );
  }
  if (Math.min(width, height) < limits.min_side) {
    return (
      `the image is only ${width}x${height} pixels; ` +
      `upload a photo at least ${limits.min_side} pixels on each side`
    );
  }
  if (Math.max(width, height) > limits.max_aspect_ratio * Math.min(width, height)) {
    return (
      `the image is ${width}x${height} pixels, longer than ${limits.max_aspect_ratio}:1; crop it to the lesion and ` +
      "upload that"
    );
  }
  return null;
}

function bytesProblem(size, limits) {
  if (size === 0) return "the file is empty (0 bytes); upload a JPEG or PNG photo";
  if (size > limits.max_file_bytes) {
    return (
      `the file is ${(size / 1e6).toFixed(1)} MB; the limit is ${Math.round(limits.max_file_bytes / 1e6)} MB ` +
      "(upload a smaller JPEG or PNG)"
    );
  }
  return null;
}

// The file signatures of imaging.FORMATS (the formats the server opens), as Pillow's format plugins recognise them.
const text = (bytes, from, to) => String.fromCharCode(...bytes.slice(from, to));
const SIGNATURES = {
  JPEG: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff,
  PNG: (b) => [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v),
  GIF: (b) => ["GIF87a", "GIF89a"].includes(text(b, 0, 6)),
  WEBP: (b) => text(b, 0, 4) === "RIFF" && text(b, 8, 12) === "WEBP",
  TIFF: (b) => ["II*\0", "MM\0*"].includes(text(b, 0, 4)),
  BMP: (b) => b[0] === 0x42 && b[1] === 0x4d,
  PPM: (b) => b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x37, // P1-P7
};

/** Which of `formats` the file is, by its first bytes; null when none (the server refuses it too). */
async function sniff(blob, formats) {
  const head = new Uint8Array(await blob.slice(0, 16).arrayBuffer());
  return formats.find((format) => SIGNATURES[format]?.(head)) ?? null;
}

function dataUrlToBlob(url) {
  const comma = url.indexOf(",");
  const header = url.slice(5, comma);
  if (comma < 0 || !header.includes(";base64")) {
    throw new ImageError("could not read image: unsupported data URL; upload a JPEG or PNG photo");
  }
  let binary;
  try {
    binary = atob(url.slice(comma + 1));
  } catch {
    throw new ImageError("could not read image: the data URL is not valid base64");
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: header.split(";")[0] });
}

function toBlob(input) {
  if (input instanceof Blob) return input;
  if (typeof input === "string" && input.startsWith("data:")) return dataUrlToBlob(input);
  throw new ImageError("no image was received; upload a JPEG or PNG photo");
}

/**
 * Decode like imaging.load_image: EXIF orientation applied, no colour management (Pillow applies none), transparency
 * flattened onto white. Returns {width, height, data} with RGBA bytes.
 */
async function decode(blob, limits, notAnImage, format) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch {
    // The server reads TIFF and PPM, which browsers do not decode; anything else that fails here is broken.
    throw new ImageError(
      ["TIFF", "PPM"].includes(format)
        ? `this browser cannot decode ${format} images; save the photo as JPEG or PNG and try again`
        : notAnImage,
    );
  }
  try {
    const problem = sizeProblem(bitmap.width, bitmap.height, limits);
    if (problem) throw new ImageError(problem);
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, bitmap.width, bitmap.height);
    context.drawImage(bitmap, 0, 0); // same size: a copy, no scaling
    return context.getImageData(0, 0, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/**
 * imaging.load_image's JPEG draft, as Predictor asks for it (draft_size = the largest shorter side any package
 * resizes to): the server lets libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale (Pillow's draft for the size
 * 2 * draftSize), as far as keeps the shorter side >= 2 * draftSize. A browser cannot decode at reduced scale, so
 * the page box-averages the full decode by the same scale (libjpeg's 1/8 output is each 8x8 block's mean): close to
 * the server's pixels, not bit-exact. Other formats are used as decoded, as on the server.
 */
function drafted(image, draftSize) {
  const fit = Math.min(Math.floor(image.width / (2 * draftSize)), Math.floor(image.height / (2 * draftSize)));
  const scale = [8, 4, 2, 1].find((a) => fit >= a) ?? 1;
  return scale > 1 ? reduce(image.rgb, image.width, image.height, scale) : image;
}

function softmax(logits, temperature) {
  const scaled = Array.from(logits, (v) => Math.fround(v / Math.fround(temperature)));
  const top = Math.max(...scaled);
  const exp = scaled.map((v) => Math.exp(v - top));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => Math.fround(v / total));
}

function byLabel(labels, probabilities) {
  return Object.fromEntries(labels.map((label, i) => [label, probabilities[i]]));
}

function clip01(x) {
  return Math.min(1, Math.max(0, x));
}

// skin_demo/postprocess.py, function for function (tests/test_on_device.py pins the two together); `m` is
// manifest.json, which names the domains, labels and scores.

/** postprocess.positive_probability: the probabilities summed over the package's malignant labels. */
function positiveProbability(config, probabilities) {
  return clip01(config.malignant_labels.reduce((sum, label) => sum + probabilities[label], 0));
}

function likelierDomain(m, probabilities) {
  const [dermoscopy, clinical] = m.domains;
  return (probabilities[dermoscopy] ?? 0) >= (probabilities[clinical] ?? 0) ? dermoscopy : clinical;
}

/** postprocess.image_domain and postprocess.lesion_check: {domain: {label, probabilities}, check}. */
export function checkImage(m, checkProbabilities, checkConfig) {
  const [dermoscopy, clinical] = m.domains;
  const older = checkConfig.labels.includes(m.lesion_label); // the two-label check knew one domain
  const probabilities = older
    ? {
        [dermoscopy]: clip01(checkProbabilities[m.lesion_label]),
        [m.not_lesion_label]: clip01(checkProbabilities[m.not_lesion_label]),
      }
    : Object.fromEntries([...m.domains, m.not_lesion_label].map((l) => [l, clip01(checkProbabilities[l])]));
  const score = clip01(
    older ? checkProbabilities[m.lesion_label] : checkProbabilities[dermoscopy] + checkProbabilities[clinical],
  );
  const threshold = checkConfig.decision_threshold ?? m.default_threshold;
  const label = score >= threshold ? likelierDomain(m, probabilities) : m.not_lesion_label;
  return {
    domain: { label, probabilities },
    check: { passed: label !== m.not_lesion_label, score, threshold, message: m.lesion_check_messages[label] },
  };
}

/** postprocess.decision_domain. */
export function decisionDomain(m, domain) {
  return m.domains.includes(domain.label) ? domain.label : likelierDomain(m, domain.probabilities);
}

/** postprocess.malignancy_score + malignancy_flag: `byTask` holds each package's {config, probabilities}. */
export function malignancyCall(m, domain, byTask) {
  const config = byTask.malignancy.config;
  const scoreFrom = config.decision_scores?.[domain] ?? m.default_score;
  const scored = byTask[m.score_tasks[scoreFrom]];
  const score = positiveProbability(scored.config, scored.probabilities);
  const threshold = config.decision_thresholds?.[domain] ?? config.decision_threshold ?? m.default_threshold;
  return { score, flag: { flagged: score >= threshold, threshold, domain, score_from: scoreFrom } };
}

async function readBody(response, onBytes) {
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
    onBytes(value.length);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes.buffer;
}

/** A same-origin file, from the offline cache when it is there, else downloaded (with progress) and cached. */
async function loadFile(url, contentType, onBytes) {
  const cache = "caches" in self ? await caches.open(CACHE_NAME) : null;
  const cached = cache ? await cache.match(url, { ignoreVary: true }) : undefined;
  if (cached) return readBody(cached, () => {});
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`could not download ${url} (HTTP ${response.status})`);
  const bytes = await readBody(response, onBytes);
  if (cache) await cache.put(url, new Response(bytes, { headers: { "Content-Type": contentType } }));
  return bytes;
}

/** Which files a first visit downloads, and how much of that is already on this device. */
export async function downloadPlan(manifest) {
  const files = [manifest.runtime.wasm, ...manifest.models]; // each model file once, however many tasks it serves
  const cache = "caches" in self ? await caches.open(CACHE_NAME) : null;
  const missing = [];
  for (const file of files) {
    const url = new URL(file.url, manifest.base).href;
    if (!cache || !(await cache.match(url, { ignoreVary: true }))) missing.push(file);
  }
  return {
    missingBytes: missing.reduce((sum, f) => sum + f.bytes, 0), // as the page reads them (progress)
    missingTransferBytes: missing.reduce((sum, f) => sum + f.transfer_bytes, 0), // over the wire
  };
}

/** Drop cached runtimes and models this manifest no longer names (an older version, replaced packages). */
async function pruneCache(manifest) {
  if (!("caches" in self)) return;
  const base = manifest.base;
  const keep = new Set([
    ...manifest.shell.map((u) => new URL(u, base).href),
    new URL(manifest.runtime.wasm.url, base).href,
    ...manifest.models.map((m) => new URL(m.url, base).href),
  ]);
  const cache = await caches.open(CACHE_NAME);
  for (const request of await cache.keys()) {
    if (/\/(vendor|models)\//.test(new URL(request.url).pathname) && !keep.has(request.url)) {
      await cache.delete(request);
    }
  }
}

/** postprocess.answer_labels: the labels of the answer the malignancy call gave, in the package it was made on. */
export function answerLabels(flag, scoredConfig) {
  const malignant = scoredConfig.malignant_labels;
  return flag.flagged ? [...malignant] : scoredConfig.labels.filter((label) => !malignant.includes(label));
}

const TINY = 2.2250738585072014e-308; // numpy's finfo(float64).tiny

/** attention.evidence_map: rows of [0, 1] values, the evidence for `answer` in one image's cam {data, dims}. */
export function evidenceMap(cam, probabilities, labels, answer, decimals) {
  const [, k, h, w] = cam.dims;
  const inAnswer = labels.map((label) => answer.includes(label));
  const total = Math.max(
    labels.reduce((sum, label, i) => sum + (inAnswer[i] ? probabilities[label] : 0), 0),
    TINY,
  );
  const evidence = new Float64Array(h * w);
  for (let c = 0; c < k; c++) {
    if (!inAnswer[c]) continue;
    const weight = probabilities[labels[c]] / total;
    for (let i = 0; i < h * w; i++) evidence[i] += weight * cam.data[c * h * w + i];
  }
  const low = Math.min(...evidence);
  const peak = Math.max(...evidence) - low;
  const scale = 10 ** decimals;
  const rows = [];
  for (let y = 0; y < h; y++) {
    const row = Array.from(evidence.subarray(y * w, (y + 1) * w), (v) => (peak > 0 ? (v - low) / peak : v - low));
    rows.push(row.map((v) => Math.round(v * scale) / scale));
  }
  return rows;
}

/** attention.view_box: the square preprocess crops, in the pixels of the photo as uploaded. */
export function viewBox(decodedSize, sourceSize, preprocessConfig) {
  const {
    resized: [w, h],
    box: [left, top, right, bottom],
  } = cropGeometry(decodedSize[0], decodedSize[1], preprocessConfig);
  const [sx, sy] = [sourceSize[0] / w, sourceSize[1] / h];
  return [left * sx, top * sy, right * sx, bottom * sy];
}

export class Engine {
  /** Fetch manifest.json next to the page; `threads` overrides the wasm thread count (benchmarks). */
  static async open(baseUrl, { threads } = {}) {
    const base = new URL(".", baseUrl).href;
    const response = await fetch(new URL("manifest.json", base), { cache: "no-cache" });
    if (!response.ok) throw new Error(`could not load manifest.json (HTTP ${response.status})`);
    const manifest = await response.json();
    manifest.base = base;
    return new Engine(manifest, threads);
  }

  constructor(manifest, threads) {
    this.manifest = manifest;
    this.requestedThreads = threads;
    this.packages = {}; // task -> {config, graph, outputs, source} (addGraph)
  }

  url(relative) {
    return new URL(relative, this.manifest.base).href;
  }

  /** Load the runtime and every package; onProgress(loadedBytes, totalBytes) while downloading. */
  async load(onProgress = () => {}) {
    const m = this.manifest;
    const plan = await downloadPlan(m);
    let loaded = 0;
    const tick = (n) => {
      loaded += n;
      onProgress(loaded, plan.missingBytes);
    };
    const ort = await import(this.url(m.runtime.module));
    ort.env.wasm.wasmBinary = await loadFile(this.url(m.runtime.wasm.url), "application/wasm", tick);
    ort.env.wasm.wasmPaths = this.url(m.runtime.wasm_paths); // where the glue (and the threads' worker) is
    // Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP). Unless
    // asked for a number, ONNX Runtime Web chooses: half the cores, at most 4, when isolated; else one.
    if (this.requestedThreads) ort.env.wasm.numThreads = this.requestedThreads;
    ort.env.logLevel = "error";
    this.ort = ort;
    const versions = { single: m.format_version, heads: m.heads_format_version };
    for (const file of m.models) {
      const model = await loadFile(this.url(file.url), "application/octet-stream", tick);
      const heads = embeddedConfigs(model, m.metadata_key, { tasks: file.tasks, versions });
      const session = await ort.InferenceSession.create(model, {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
      this.addGraph(session, heads, file);
    }
    for (const task of ["malignancy", "lesion_type"]) {
      if (!this.packages[task]) throw new Error(`the server offers no ${task} model`);
    }
    this.threads = ort.env.wasm.numThreads; // set by ONNX Runtime Web when the first session started
    await pruneCache(m);
    // Predictor's draft size: the largest shorter side any package resizes to.
    this.draftSize = Math.max(...Object.values(this.packages).map((p) => shorterSide(p.config.preprocess)));
    return plan;
  }

  /**
   * One model file's session and the packages it serves (`file.tasks`: one, or several heads of its graph), each
   * with the graph's names for its logits and, where the graph gives it, its map: one run answers them all.
   */
  addGraph(session, { configs, several }, file) {
    const graph = { session, preprocess: configs[file.tasks[0]].preprocess, fetches: [] };
    for (const task of file.tasks) {
      const name = (output) => (several ? headOutput(task, output) : output);
      const cam = name(this.manifest.attention.output);
      const outputs = { logits: name("logits"), cam: session.outputNames.includes(cam) ? cam : null };
      graph.fetches.push(...Object.values(outputs).filter(Boolean));
      this.packages[task] = { config: configs[task], graph, outputs, source: file.source };
    }
  }

  /**
   * The model input tensor for an image, as imaging.preprocess(imaging.load_image(image, draft_size)) makes it
   * (debug hook for the parity tests; draftSize null: no JPEG draft).
   */
  async tensor(input, preprocessConfig, draftSize = null) {
    return preprocess(await this.decoded(input, draftSize), preprocessConfig);
  }

  /**
   * Decode and check an image as load_image does (with a draftSize, its JPEG draft); returns {rgb, width, height,
   * sourceSize}, sourceSize being the upright photo's [width, height] before any draft (imaging.source_size).
   */
  async decoded(input, draftSize) {
    const { limits, messages } = this.manifest;
    const blob = toBlob(input);
    const problem = bytesProblem(blob.size, limits);
    if (problem) throw new ImageError(problem);
    const format = await sniff(blob, this.manifest.formats);
    if (format === null) throw new ImageError(messages.not_an_image); // e.g. SVG, ICO, AVIF: the server's refusal
    const image = rgbOf(await decode(blob, limits, messages.not_an_image, format));
    const sourceSize = [image.width, image.height];
    return { ...(draftSize && format === "JPEG" ? drafted(image, draftSize) : image), sourceSize };
  }

  /** One graph on the image: every output its packages need, by its name in the graph. */
  async runGraph(graph, tensorsByConfig) {
    const [h, w] = graph.preprocess.size;
    const input = new this.ort.Tensor("float32", tensorsByConfig.get(JSON.stringify(graph.preprocess)), [1, 3, h, w]);
    const outputs = await graph.session.run({ image: input }, graph.fetches);
    input.dispose?.();
    return outputs;
  }

  /**
   * The packages of `tasks` on the image, by task: {probabilities (by label), cam ({data, dims}, or null without
   * that output)}. `runs` (graph -> its outputs) holds the graphs this analysis has run: each runs once, however
   * many of its heads are asked for (as Predictor does).
   */
  async run(tasks, tensorsByConfig, runs) {
    const answers = {};
    for (const task of tasks) {
      const pack = this.packages[task];
      if (!runs.has(pack.graph)) runs.set(pack.graph, await this.runGraph(pack.graph, tensorsByConfig));
      const outputs = runs.get(pack.graph);
      const logits = outputs[pack.outputs.logits];
      const cam = pack.outputs.cam ? outputs[pack.outputs.cam] : null;
      const probabilities = softmax(logits.data, pack.config.temperature ?? 1.0);
      logits.dispose?.();
      answers[task] = {
        probabilities: byLabel(pack.config.labels, probabilities),
        cam: cam ? { data: cam.data, dims: cam.dims } : null,
      };
    }
    return answers;
  }

  /** Predictor._attention: the maps for the malignancy call's answer and the top lesion type, by what they show. */
  attention(flag, topLabel, runs, image) {
    const m = this.manifest;
    const scoredTask = m.score_tasks[flag.score_from];
    const answers = {
      malignancy: [scoredTask, answerLabels(flag, this.packages[scoredTask].config)],
      lesion_type: ["lesion_type", [topLabel]],
    };
    const maps = {};
    for (const [shown, [task, answer]] of Object.entries(answers)) {
      const { config } = this.packages[task];
      if (!runs[task].cam) continue;
      maps[shown] = {
        task,
        labels: answer,
        grid: evidenceMap(runs[task].cam, runs[task].probabilities, config.labels, answer, m.attention.decimals),
        box: viewBox([image.width, image.height], image.sourceSize, config.preprocess),
      };
    }
    return Object.keys(maps).length ? maps : null;
  }

  /** Analyse one image (a Blob/File or a data: URL); resolves to /predict's JSON, rejects with ImageError. */
  async analyse(input) {
    const m = this.manifest;
    const t0 = performance.now();
    const image = await this.decoded(input, this.draftSize);
    const t1 = performance.now();
    const tensors = new Map(); // packages that share a preprocessing config share one tensor
    for (const pack of Object.values(this.packages)) {
      const key = JSON.stringify(pack.config.preprocess);
      if (!tensors.has(key)) tensors.set(key, preprocess(image, pack.config.preprocess));
    }
    const t2 = performance.now();
    const graphRuns = new Map(); // graph -> its outputs: each runs once in an analysis
    const runs = await this.run(["malignancy", "lesion_type"], tensors, graphRuns);
    const [malignancy, lesionType] = [runs.malignancy.probabilities, runs.lesion_type.probabilities];
    const t3 = performance.now();
    let lesionCheck = null;
    let imageDomain = null;
    let decideFor = m.domains[0]; // no lesion check: called as dermoscopy, the domain the models were validated on
    if (this.packages.lesion_check) {
      const checkProbabilities = (await this.run(["lesion_check"], tensors, graphRuns)).lesion_check.probabilities;
      const { domain, check } = checkImage(m, checkProbabilities, this.packages.lesion_check.config);
      [lesionCheck, imageDomain, decideFor] = [check, domain, decisionDomain(m, domain)];
    }
    const t4 = performance.now();

    const byTask = {
      malignancy: { config: this.packages.malignancy.config, probabilities: malignancy },
      lesion_type: { config: this.packages.lesion_type.config, probabilities: lesionType },
    };
    const { score, flag } = malignancyCall(m, decideFor, byTask);
    const ranked = Object.entries(lesionType).sort((a, b) => b[1] - a[1]).slice(0, m.top_k);
    const result = {
      malignancy,
      lesion_type: lesionType,
      malignancy_probability: score,
      lesion_type_malignant_probability: positiveProbability(byTask.lesion_type.config, lesionType),
      malignancy_flag: flag,
      lesion_check: lesionCheck,
      image_domain: imageDomain,
      lesion_type_top: ranked.map(([label, probability]) => ({ label, name: m.names[label] ?? label, probability })),
      models: Object.fromEntries(
        Object.entries(this.packages).map(([task, p]) => [
          task,
          {
            task,
            source: p.source,
            architecture: p.config.architecture,
            labels: p.config.labels,
            metrics: p.config.metrics,
          },
        ]),
      ),
      timings_ms: {
        decode: t1 - t0,
        preprocess: t2 - t1,
        inference: t3 - t2,
        lesion_check: t4 - t3,
        total: t4 - t0,
      },
      attention: this.attention(flag, ranked[0][0], runs, image),
      disclaimer: m.messages.disclaimer,
      notices: m.notices,
      on_device: { threads: this.threads, cross_origin_isolated: self.crossOriginIsolated },
    };
    return result;
  }
}
