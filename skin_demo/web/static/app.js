// The page: pick, take, paste or drop a photo; it is analysed here, in this browser, and never sent anywhere.
// window.skinDemo.analyse(dataUrlOrBlob) gives programs (and the tests) the same JSON as the server's /predict.

import { downloadPlan, Engine, ImageError } from "./engine.js";
import { donut, lesionTypeSlices, malignancySlices } from "./donut.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
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

function render(result, manifest, { forceNumbers = false } = {}) {
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
  $("headline").textContent = rejected
    ? "No result: not a lesion close-up"
    : `${words.headline} (${percent(p)} malignant; threshold ${percent(flag.threshold)})`;
  $("headline").className = rejected ? "" : flag.flagged ? "flagged" : "not-flagged";
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
        centre: `${Math.round(100 * p)}%`,
        caption: "malignant",
      }),
      donut({
        title: "Most similar lesion types",
        slices: lesionTypeSlices(result, manifest),
        centre: `${Math.round(100 * best.probability)}%`,
        caption: best.label,
      }),
    );
    $("summary").textContent =
      `Malignant: ${percent(p)}, benign: ${percent(1 - p)}, from ${words.score_name}. Most similar lesion types: ` +
      result.lesion_type_top.map((r) => `${r.name} ${percent(r.probability)}`).join(", ") +
      ". Research demo, not a diagnosis.";
  } else {
    $("summary").textContent = "";
  }
  $("json").textContent = JSON.stringify(result, null, 2);
  const t = result.timings_ms;
  $("timing").textContent =
    `Analysed on this device in ${t.total.toFixed(0)} ms (decode ${t.decode.toFixed(0)}, preprocess ` +
    `${t.preprocess.toFixed(0)}, models ${t.inference.toFixed(0)}, check ${t.lesion_check.toFixed(0)}).`;
}

let last = null;

async function analyseFile(file) {
  const engine = await ready;
  show("result", true);
  $("error").textContent = "";
  show("error", false);
  try {
    const result = await engine.analyse(file);
    last = result;
    render(result, engine.manifest);
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
  if (last) render(last, (await ready).manifest, { forceNumbers: true });
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
