"""The on-device page (/on-device/) in headless Chromium: in-browser latency per image and first-load bytes.

    python -m benchmarks.bench_browser [--models-dir models] [--images 16] [--repeats 3] [--json FILE]

The app is launched in this process the way `python app.py` serves it (ui.build_app + ui.launch, which mounts the
page); the page is driven with Playwright in Debian's Chromium (/usr/bin/chromium). Measured:
  first load   bytes over the wire for a visitor with an empty cache (encoded bodies + headers of every network
               request until the models are ready, the service worker's included) and the time to ready; then the
               second visit (runtime and models from the device's cache)
  per image    the page's own timings (window.skinDemo.analyse, from an image Blob as a file picker gives it):
               decode, preprocess, both models, the lesion check, total; p50/p95 over images x repeats, with wasm
               SIMD on one thread and with one thread per core (the page is cross-origin isolated: COOP/COEP)
  baseline     the server's own timings (/predict's timings_ms, native ONNX Runtime) for the same images, in the
               same run: the ratio browser / server says what running on the device costs
  phone photo  decode + preprocess of a generated 4000x3000 JPEG (the dataset images are 200x150 and 256x256)
"""

from __future__ import annotations

import argparse
import base64
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEFAULT_DATA,
    DEFAULT_SPLIT,
    REPO_ROOT,
    Stats,
    generated_images,
    start_report,
    table,
    write_json,
)

TIMEOUT_MS = 600_000
TARGETS = {"models_and_check_p50_ms": 150.0, "first_load_mb": 15.0}  # issue 17: <= 15 MB
STEPS = ("decode", "preprocess", "inference", "lesion_check", "total")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_browser_") as tmp:
        tmp_path = Path(tmp)
        images, report = start_report(args, tmp_path)
        report.update(run(args, images, tmp_path))
    write_json(args.json, report)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models", help="packages to serve (bundled)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--images", type=int, default=16, help="distinct images (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="analyses of each image per mode (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="threads of the threaded mode (default: cores)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, images: list[Path], tmp: Path) -> dict[str, Any]:
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    from skin_demo import ui
    from skin_demo.modelpack import available_cpus
    from skin_demo.hub import load_models
    from skin_demo.settings import Settings

    settings = Settings(models_dir=args.models_dir, examples_dir=tmp / "no-examples")
    models = load_models(settings)
    demo = ui.build_app(settings, models=models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui.launch(demo, models, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    url = demo.local_url + "on-device/"
    threads = args.threads or available_cpus()
    phone = generated_images(1, tmp / "phone", size=(4000, 3000))[0]
    out: dict[str, Any] = {"url": url, "packages": {task: p.source for task, p in models.items()}}
    try:
        client = Client(demo.local_url, verbose=False)
        server = [client.predict(handle_file(str(p)), api_name="/predict")["timings_ms"] for p in images]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                out["first_load"] = first_load(browser, url)
                out["modes"] = {}
                for name, n in (("wasm SIMD, 1 thread", 1), (f"wasm SIMD, {threads} threads", threads)):
                    out["modes"][name] = per_image(browser, f"{url}?threads={n}", images, phone, args.repeats)
            finally:
                browser.close()
    finally:
        demo.close()
    out["server"] = {step: Stats.of([t[step] for t in server]).as_dict() for step in server[0]}
    print_report(out)
    return out


def first_load(browser, url: str) -> dict[str, Any]:
    """An empty profile's first visit until the models are ready, then a second visit in the same profile."""
    context = browser.new_context()
    requests: list = []
    context.on("requestfinished", lambda r: requests.append(r))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    start = time.perf_counter()
    page.goto(url, wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    first_s = time.perf_counter() - start
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    manifest = page.evaluate("() => fetch('manifest.json').then(r => r.json())")
    wire, by_kind = 0, {"models": 0, "runtime": 0, "page": 0}
    for request in list(requests):
        response = request.response()
        if response is None or response.from_service_worker:
            continue  # served by the service worker from its cache: nothing crossed the network
        sizes = request.sizes()
        n = sizes["responseBodySize"] + sizes["responseHeadersSize"]
        wire += n
        kind = "models" if "/models/" in request.url else "runtime" if "/vendor/" in request.url else "page"
        by_kind[kind] += n
    requests.clear()
    start = time.perf_counter()
    page.reload(wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    second_s = time.perf_counter() - start
    second_wire = sum(
        r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]
        for r in requests
        if r.response() is not None and not r.response().from_service_worker
    )
    context.close()
    decoded = manifest["runtime"]["wasm"]["bytes"] + sum(m["bytes"] for m in manifest["models"])
    return {
        "wire_mb": wire / 1e6,
        "wire_mb_by_kind": {k: v / 1e6 for k, v in by_kind.items()},
        "decoded_runtime_and_models_mb": decoded / 1e6,
        "models_mb": {" + ".join(m["tasks"]): m["bytes"] / 1e6 for m in manifest["models"]},
        "ready_s": first_s,
        "second_visit_wire_mb": second_wire / 1e6,
        "second_visit_ready_s": second_s,
    }


def per_image(browser, url: str, images: list[Path], phone: Path, repeats: int) -> dict[str, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    runtime = page.evaluate("() => window.skinDemo.debug.runtime()")
    # Blobs made in the page, as a file picker hands them over (a data URL would add its base64 decoding).
    urls = [_data_url(p) for p in [*images, phone]]
    page.evaluate("urls => Promise.all(urls.map(u => fetch(u).then(r => r.blob()))).then(b => { window.__b = b; })",
                  urls)  # fmt: skip
    analyse = "i => window.skinDemo.analyse(window.__b[i]).then(r => r.timings_ms)"
    for i in range(min(2, len(images))):
        page.evaluate(analyse, i)  # warm-up: the first runs allocate the wasm arenas
    samples = [page.evaluate(analyse, i) for _ in range(repeats) for i in range(len(images))]
    phone_samples = [page.evaluate(analyse, len(images)) for _ in range(repeats)]
    context.close()
    steps = {step: Stats.of([s[step] for s in samples]).as_dict() for step in STEPS}
    steps["models_and_check"] = Stats.of([s["inference"] + s["lesion_check"] for s in samples]).as_dict()
    phone_stats = {step: Stats.of([s[step] for s in phone_samples]).as_dict() for step in ("decode", "preprocess")}
    return {"runtime": runtime, "steps": steps, "phone_photo": phone_stats}


def _data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def print_report(out: dict[str, Any]) -> None:
    load = out["first_load"]
    print("\n### First load (empty browser cache), over the wire")
    print(table(
        ["what", "MB", "target"],
        [["total (page + runtime + models)", load["wire_mb"], f"<= {TARGETS['first_load_mb']:.0f}"],
         *[[f"  {k}", v, ""] for k, v in load["wire_mb_by_kind"].items()],
         ["runtime + models, decoded", load["decoded_runtime_and_models_mb"], ""],
         *[[f"  model {k}", v, ""] for k, v in load["models_mb"].items()],
         ["second visit", load["second_visit_wire_mb"], ""]],
    ))  # fmt: skip
    print(f"time to ready: first visit {load['ready_s']:.1f} s, second visit {load['second_visit_ready_s']:.1f} s")
    server = out["server"]
    for name, mode in out["modes"].items():
        rt = mode["runtime"]
        print(f"\n### Per image in the browser, {name} (cross-origin isolated: {rt['crossOriginIsolated']}, "
              f"threads in use: {rt['threads']}), ms")  # fmt: skip
        rows = []
        for step in (*STEPS[:4], "models_and_check", "total"):
            s = mode["steps"][step]
            base = server.get("inference") if step == "models_and_check" else server.get(step)
            ratio = s["p50"] / base["p50"] if base and step in ("decode", "preprocess", "models_and_check") else None
            target = f"<= {TARGETS['models_and_check_p50_ms']:.0f}" if step == "models_and_check" else ""
            rows.append([step, s["p50"], s["p95"], s["n"], "" if ratio is None else f"{ratio:.2f}", target])
        print(table(["step", "p50", "p95", "n", "p50 browser / server", "target (p50)"], rows))
        phone = mode["phone_photo"]
        print(f"4000x3000 JPEG: decode p50 {phone['decode']['p50']:.0f} ms, preprocess p50 "
              f"{phone['preprocess']['p50']:.0f} ms")  # fmt: skip
    print("\n### Server baseline (/predict timings_ms, native ONNX Runtime, same images), ms")
    print(table(["step", "p50", "p95", "n"], [[k, v["p50"], v["p95"], v["n"]] for k, v in server.items()]))


if __name__ == "__main__":
    sys.exit(main())
