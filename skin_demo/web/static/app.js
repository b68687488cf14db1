// The page: pick, take, paste or drop a photo; it is analysed here, in this browser, and never sent anywhere.
// window.skinDemo.analyse(dataUrlOrBlob) gives programs (and the tests) the same JSON as the server's /predict.

import { downloadPlan, Engine, ImageError } from "./engine.js";
import { donut, lesionTypeSlices, malignancySlices } from "./donut.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** texts.percentage: two significant digits ("7.8 %", "0.13 %", "18 %"). */
function percentage(p) {
  return `${Number((100 * p).toPrecision(2))} %`;
}

/** attention.overlay_rgba, as a PNG data URL the browser stretches smoothly over the box. */
function overlayUrl(grid, { colour, max_alpha: maxAlpha }) {
  const [h, w] = [grid.length, grid[0].length];
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [w, h];
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(w, h);
  grid.flat().forEach((v, i) => {
    pixels.data.set([...colour, Math.round(255 * maxAlpha * Math.min(1, Math.max(0, v)))], 4 * i);
  });
  context.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

function element(name, attributes = {}, text = undefined) {
  const el = document.createElement(name);
  for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** page.photo_html's twin: the analysed photo and, where the models give maps, the "where the model looked" switch. */
function renderPhoto(figure, photoUrl, attention, manifest) {
  const photo = element("img", { src: photoUrl, alt: "The analysed photo" });
  const frame = element("div", { class: "frame" });
  frame.append(photo);
  figure.replaceChildren();
  if (!attention) {
    figure.append(frame);
    return;
  }
  const { switches, caption } = manifest.attention;
  const keys = ["off", ...Object.keys(attention)];
  for (const key of keys) {
    const radio = element("input", { type: "radio", class: "switch", name: "map", id: `map-${key}` });
    radio.checked = key === "off";
    figure.append(radio);
  }
  const layers = Object.entries(attention).map(([shown, map]) => {
    const layer = element("img", { class: `map map-${shown}`, src: overlayUrl(map.grid, manifest.attention), alt: "" });
    photo.addEventListener("load", () => {
      // The box is in the photo's own (upright) pixels, as the browser shows it.
      const [width, height] = [photo.naturalWidth, photo.naturalHeight];
      const [left, top, right, bottom] = map.box;
      Object.assign(layer.style, {
        left: `${(100 * left) / width}%`,
        top: `${(100 * top) / height}%`,
        width: `${(100 * (right - left)) / width}%`,
        height: `${(100 * (bottom - top)) / height}%`,
      });
      if (right - left < width - 1 || bottom - top < height - 1) layer.classList.add("cropped");
    });
    return layer;
  });
  frame.append(...layers);
  const labels = element("span", { class: "switches" }, "Where the model looked: ");
  for (const key of keys) labels.append(element("label", { for: `map-${key}` }, key === "off" ? "off" : switches[key] ?? key));
  const figcaption = element("figcaption");
  figcaption.append(labels, element("span", { class: "map-caption" }, caption));
  figure.append(frame, figcaption);
}

async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    await navigator.serviceWorker.register("sw.js", { scope: "./" });
    return await navigator.serviceWorker.ready;
  } catch (error) {
    console.warn("offline mode unavailable:", error.message);
    return null;
  }
}

async function start() {
  const worker = registerServiceWorker();
  const engine = await Engine.open(location.href, { threads: Number(params.get("threads")) || undefined });
  const m = engine.manifest;
  $("disclaimer-short").textContent = m.messages.disclaimer_short;
  $("disclaimer-full").textContent = m.messages.disclaimer;
  const notices = Object.values(m.notices ?? {});
  $("notices").textContent = notices.map((n) => `Model notice: ${n}`).join(" ");
  $("notices").hidden = notices.length === 0; // e.g. the Hub package is not in use and why
  if (m.server_page) {
    $("server-link").href = new URL(m.server_page, m.base).href;
    $("server-link").hidden = false;
  }
  const plan = await downloadPlan(m);
  const status = $("load-status");
  const progress = $("progress");
  if (plan.missingBytes > 0) {
    status.textContent =
      `First use: downloading the models and the runtime (${megabytes(plan.missingTransferBytes)}) once. ` +
      "After that this page works offline.";
    progress.hidden = false;
    progress.max = plan.missingBytes;
  } else {
    status.textContent = "Loading the models from this device…";
  }
  await engine.load((loaded, total) => {
    progress.value = loaded;
    progress.textContent = `${Math.round((100 * loaded) / total)}%`;
  });
  progress.hidden = true;
  const offline = await worker;
  status.textContent =
    (plan.missingBytes > 0
      ? `Ready. Downloaded ${megabytes(plan.missingTransferBytes)} for this first use; `
      : "Ready: the models were already on this device; ") +
    (offline ? "the page works offline from now on." : "offline use is not available in this browser.") +
    (engine.threads > 1 ? ` (${engine.threads} threads)` : "");
  $("models").textContent = Object.values(engine.packages)
    .map((p) => `${p.config.task.replace("_", "-")}: ${p.config.architecture}`)
    .join(", ");
  document.body.classList.add("ready");
  return engine;
}

const ready = start();
ready.catch((error) => {
  $("load-status").textContent = `The models could not be loaded: ${error.message}`;
  $("progress").hidden = true;
});

function show(id, visible) {
  $(id).hidden = !visible;
}

function render(result, manifest, photoUrl, { forceNumbers = false } = {}) {
  const check = result.lesion_check;
  const rejected = check && !check.passed && !forceNumbers;
  $("message").textContent = check && !check.passed ? check.message : "";
  show("message", Boolean(check && !check.passed));
  show("show-anyway", Boolean(rejected));
  const flag = result.malignancy_flag;
  const p = result.malignancy_probability;
  // The words for this call come from the server (texts.flag_words, per domain), never from this page.
  const words = manifest.flag_words[flag.domain][flag.flagged ? "flagged" : "not_flagged"];
  const domain = result.image_domain;
  $("domain").textContent = domain ? manifest.names[domain.label] : "";
  show("domain", Boolean(domain));
  renderPhoto($("photo"), photoUrl, rejected ? null : result.attention, manifest);
  $("headline").textContent = rejected ? "No result: not a lesion close-up" : words.headline;
  $("headline").className = rejected ? "" : flag.flagged ? "flagged" : "not-flagged";
  // The threshold, said once and in words; the malignancy percentage is the donut's centre.
  $("threshold").textContent = rejected ? "" : `${words.threshold_line} Not a diagnosis.`;
  $("caveat").textContent = rejected ? "" : words.caveat;
  show("caveat", Boolean(!rejected && words.caveat));
  const charts = $("charts");
  charts.replaceChildren();
  if (!rejected) {
    const best = result.lesion_type_top[0];
    charts.append(
      donut({
        title: "Malignant vs benign",
        slices: malignancySlices(result, manifest.colours),
        centre: percentage(p),
        caption: "malignant",
      }),
      donut({
        title: "Most similar lesion types",
        slices: lesionTypeSlices(result, manifest),
        centre: percentage(best.probability),
        caption: manifest.short_names[best.label] ?? best.label,
      }),
    );
  }
  $("json").textContent = JSON.stringify(result, null, 2);
  const t = result.timings_ms;
  $("timing").textContent =
    `Analysed on this device in ${t.total.toFixed(0)} ms (decode ${t.decode.toFixed(0)}, preprocess ` +
    `${t.preprocess.toFixed(0)}, models ${t.inference.toFixed(0)}, check ${t.lesion_check.toFixed(0)}).`;
}

let last = null;
let lastPhotoUrl = null;

async function analyseFile(file) {
  const engine = await ready;
  show("result", true);
  $("error").textContent = "";
  show("error", false);
  try {
    const result = await engine.analyse(file);
    if (lastPhotoUrl) URL.revokeObjectURL(lastPhotoUrl);
    [last, lastPhotoUrl] = [result, URL.createObjectURL(file)];
    render(result, engine.manifest, lastPhotoUrl);
    show("output", true);
  } catch (error) {
    show("output", false);
    $("error").textContent =
      error instanceof ImageError
        ? `Cannot analyse this file: ${error.message}`
        : `Something went wrong while analysing this image (${error.message}). Please try another photo.`;
    show("error", true);
  }
  $("result").scrollIntoView({ block: "start", behavior: "instant" });
}

for (const id of ["camera", "file"]) {
  $(id).addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) analyseFile(file);
    event.target.value = ""; // choosing the same photo again fires change again
  });
}

$("show-anyway").addEventListener("click", async () => {
  if (last) render(last, (await ready).manifest, lastPhotoUrl, { forceNumbers: true });
});

document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items ?? [])].find((i) => i.kind === "file");
  if (item) {
    event.preventDefault();
    analyseFile(item.getAsFile());
  }
});

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const [file] = event.dataTransfer?.files ?? [];
  if (file) analyseFile(file);
});

window.skinDemo = {
  /** Resolves when the models are loaded (rejects if they cannot be). */
  ready: ready.then(() => true),
  /** Analyse a Blob/File or a data: URL here; resolves to /predict's JSON, rejects with an ImageError. */
  analyse: async (input) => (await ready).analyse(input),
  debug: {
    /**
     * The model input tensor the page computes for an image and a `preprocess` config, as a plain array; with a
     * draftSize, after the page's stand-in for load_image's JPEG draft.
     */
    tensor: async (input, preprocessConfig, draftSize = null) =>
      Array.from(await (await ready).tensor(input, preprocessConfig, draftSize)),
    /** What the page runs on: wasm threads and whether the page is cross-origin isolated. */
    runtime: async () => ({ threads: (await ready).threads, crossOriginIsolated: self.crossOriginIsolated }),
  },
};
