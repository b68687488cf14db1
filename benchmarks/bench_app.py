"""The app as visitors use it: `python app.py` in its own process, driven over HTTP.

    python -m benchmarks.bench_app [--models-dir models] [--json FILE]

Measured (the server runs with its defaults: ONNX Runtime threads = min(4, cores), requests analysed at once =
cores // threads, so extra requests wait in Gradio's queue):
  cold start      process start -> page served, and -> first successful /predict answer (median of --starts runs)
  server side     the app's own timings: the API's timings_ms (decode + preprocess + both models), and for the
                  page's upload event (what a browser triggers) the same plus the two SVG donut charts
  client side     request latency through gradio_client's /predict at 1, 4 and 16 concurrent clients (p50, p95,
                  errors, throughput), and the page event's round trip (upload + queue + SSE) with plain HTTP
  memory          peak RSS of the server process and its children (psutil, sampled every 20 ms), and RSS during
                  --leak-requests sequential requests (request 100 vs the last: a leak shows as growth)

Clients run in this process with TLS verification off (plain HTTP on localhost): gradio_client otherwise builds
httpx clients that load the CA bundle for every request, ~100 ms of CPU that would compete with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.common import (
    DEFAULT_DATA,
    DEFAULT_SPLIT,
    REPO_ROOT,
    Stats,
    median,
    start_report,
    table,
    write_json,
)

STARTUP_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
TARGETS = {"cold_start_s": 5.0, "server_side_p50_ms": 80.0, "rss_mb": 500.0}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_app_") as tmp:
        tmp_path = Path(tmp)
        images, report = start_report(args, tmp_path)
        report.update(run(args, images, tmp_path))
    write_json(args.json, report)
    return 0 if report["errors_total"] == 0 else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, help="serve these packages (SKIN_DEMO_MODELS_DIR); default: bundled")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--images", type=int, default=16, help="distinct images to send (default 16)")
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time (default 3)")
    parser.add_argument("--page-requests", type=int, default=50, help="page upload events to time (default 50)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--per-client", type=int, default=20, help="requests per client at each level (default 20)")
    parser.add_argument("--leak-requests", type=int, default=500, help="sequential requests for the RSS check")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in str(args.clients).split(",")]
    return args


# -- the server process ------------------------------------------------------------------------------------------


class Server:
    """`python app.py` on a free port with its own temp folder; RSS of it and its children sampled in a thread."""

    def __init__(self, tmp: Path, models_dir: Path | None, log_name: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
        env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
                   GRADIO_TEMP_DIR=str(tmp / "gradio_tmp"), PYTHONUNBUFFERED="1")  # fmt: skip
        if models_dir is not None:
            env["SKIN_DEMO_MODELS_DIR"] = str(models_dir)
        self.log = tmp / log_name
        self.started = time.perf_counter()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss(self) -> int:
        """Resident memory of the server and all its children, bytes."""
        try:
            proc = psutil.Process(self.proc.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_rss = max(self.peak_rss, self.rss())

    def wait_ready(self) -> float:
        """Seconds from process start until the page is served."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"app.py did not serve its page within {STARTUP_TIMEOUT_S} s")
            try:
                if httpx.get(self.url + "config", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def api_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False)


def api_predict(client, image: Path) -> dict[str, Any]:
    from gradio_client import handle_file

    return client.submit(handle_file(str(image)), api_name="/predict").result(timeout=REQUEST_TIMEOUT_S)


class PageVisitor:
    """What the browser does when a visitor drops a photo: upload it, fire the image's upload event, read the
    outputs from the event stream (plain HTTP; gradio_client cannot call the page's private events)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, verify=False)
        config = self.http.get("/config").json()
        self.prefix = config.get("api_prefix", "/gradio_api")
        elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        event = next(d for d in config["dependencies"]
                     if any(elem.get(t[0]) == "image-input" and t[1] == "upload" for t in d["targets"]))  # fmt: skip
        self.fn_index, self.trigger = event["id"], event["targets"][0][0]
        self.outputs = [elem.get(o) for o in event["outputs"]]

    def analyse(self, image: Path) -> dict[str, Any]:
        with image.open("rb") as f:
            response = self.http.post(f"{self.prefix}/upload", files={"files": (image.name, f, "image/jpeg")})
        response.raise_for_status()
        payload = {"path": response.json()[0], "orig_name": image.name, "size": image.stat().st_size,
                   "mime_type": "image/jpeg", "meta": {"_type": "gradio.FileData"}}  # fmt: skip
        session = uuid.uuid4().hex
        response = self.http.post(f"{self.prefix}/queue/join", json={
            "data": [payload, None], "event_data": None, "fn_index": self.fn_index, "trigger_id": self.trigger,
            "session_hash": session,
        })  # fmt: skip
        response.raise_for_status()
        event_id = response.json()["event_id"]
        with self.http.stream("GET", f"{self.prefix}/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    if not message.get("success"):
                        raise RuntimeError(f"page event failed: {message.get('output')}")
                    return dict(zip(self.outputs, message["output"]["data"], strict=False))
        raise RuntimeError("the event stream ended without a result")


# -- the measurements -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, images: list[Path], tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"errors_total": 0}

    # Cold starts: the last server stays up for the rest.
    starts, server = [], None
    for i in range(args.starts):
        if server is not None:
            server.stop()
        server = Server(tmp, args.models_dir, f"app_{i}.log")
        ready = server.wait_ready()
        client = api_client(server.url)
        api_predict(client, images[0])
        first = time.perf_counter() - server.started
        starts.append({"page_served_s": round(ready, 3), "first_prediction_s": round(first, 3),
                       "rss_after_first_mb": round(server.rss() / 2**20, 1)})  # fmt: skip
        print(f"  start {i + 1}: page served after {ready:.2f} s, first prediction after {first:.2f} s",
              file=sys.stderr)
    assert server is not None
    out["cold_start"] = {"runs": starts, "median_first_prediction_s": median([s["first_prediction_s"] for s in starts]),
                         "median_page_served_s": median([s["page_served_s"] for s in starts])}  # fmt: skip
    log_lines = [line for line in server.log.read_text().splitlines() if "using" in line or "threads" in line]
    out["server_log"] = log_lines[:6]
    try:
        out.update(measure(server, args, images))
    finally:
        server.stop()
    out["peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
    report(out, args)
    return out


def measure(server: Server, args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_idle_mb": round(server.rss() / 2**20, 1)}

    # The page's upload event, one visitor: the app's own timings (with charts) and the round trip.
    visitor = PageVisitor(server.url)
    page_server: dict[str, list[float]] = {}
    page_wall = []
    for i in range(args.page_requests):
        start = time.perf_counter()
        outputs = visitor.analyse(images[i % len(images)])
        page_wall.append(1000 * (time.perf_counter() - start))
        for key, value in outputs["result-json"]["timings_ms"].items():
            page_server.setdefault(key, []).append(value)
    out["page"] = {"server_ms": {k: Stats.of(v).as_dict() for k, v in page_server.items()},
                   "round_trip_ms": Stats.of(page_wall).as_dict()}  # fmt: skip

    # The API at 1, 4 and 16 concurrent clients.
    out["api"] = {}
    for n in args.clients:
        out["api"][n] = concurrent_requests(server.url, images, n, args.per_client)
        out["errors_total"] = out.get("errors_total", 0) + out["api"][n]["errors"]

    # Memory over many sequential requests.
    client = api_client(server.url)
    series = []
    for i in range(1, args.leak_requests + 1):
        api_predict(client, images[i % len(images)])
        if i % 50 == 0 or i == 100 or i == args.leak_requests:
            series.append((i, round(server.rss() / 2**20, 1)))
    out["rss_series_mb"] = series
    at = dict(series)
    checkpoint = 100 if 100 in at else series[0][0]
    out["rss_growth_mb"] = round(at[args.leak_requests] - at[checkpoint], 1)
    out["rss_growth_from"] = checkpoint
    return out


def concurrent_requests(url: str, images: list[Path], n_clients: int, per_client: int) -> dict[str, Any]:
    """`n_clients` API clients in parallel, each sending its own copies of the images.

    Own copies, as distinct visitors send distinct files: Gradio names an upload by its bytes and file name, so two
    clients sending one file at once share one upload, which the app analyses once (the second is asked to upload
    again; README, "API usage").
    """
    with tempfile.TemporaryDirectory(prefix="bench_app_clients_") as tmp:
        own = [[_copy(image, Path(tmp) / f"client{index}_{image.name}") for image in images]
               for index in range(n_clients)]
        return _concurrent_requests(url, own, per_client)


def _copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


def _concurrent_requests(url: str, images_by_client: list[list[Path]], per_client: int) -> dict[str, Any]:
    n_clients = len(images_by_client)
    clients = [api_client(url) for _ in range(n_clients)]
    latencies: list[float] = []
    server_total: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def visitor(index: int) -> None:
        for j in range(per_client):
            images = images_by_client[index]
            image = images[(index * per_client + j) % len(images)]
            start = time.perf_counter()
            try:
                result = api_predict(clients[index], image)
            except Exception as exc:  # counted and shown; a benchmark reports errors, it does not stop at one
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            elapsed = 1000 * (time.perf_counter() - start)
            with lock:
                latencies.append(elapsed)
                server_total.append(result["timings_ms"]["total"])

    start = time.perf_counter()
    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(visitor, range(n_clients)))
    wall = time.perf_counter() - start
    return {
        "requests": n_clients * per_client,
        "errors": len(errors),
        "error_examples": errors[:3],
        "client_ms": Stats.of(latencies).as_dict() if latencies else None,
        "server_total_ms": Stats.of(server_total).as_dict() if server_total else None,
        "requests_per_s": round(len(latencies) / wall, 2),
    }


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    cold = out["cold_start"]
    print("\n## Cold start (process start -> ...), s")
    print(table(["run", "page served", "first prediction", "RSS after it, MB"],
                [[i + 1, s["page_served_s"], s["first_prediction_s"], s["rss_after_first_mb"]]
                 for i, s in enumerate(cold["runs"])]))  # fmt: skip
    if out.get("server_log"):
        print("server log: " + " / ".join(line.split(": ", 1)[-1] for line in out["server_log"]))

    page = out["page"]
    print(f"\n## Page upload event, one visitor, {args.page_requests} requests: the app's own timings, ms")
    order = ["decode", "preprocess", "inference", "charts", "total"]
    print(table(["step", "p50", "p95"], [[k, page["server_ms"][k]["p50"], page["server_ms"][k]["p95"]]
                                         for k in order if k in page["server_ms"]]
                + [["round trip seen by the browser (upload + queue + event stream)", page["round_trip_ms"]["p50"],
                    page["round_trip_ms"]["p95"]]]))  # fmt: skip

    print("\n## /predict through gradio_client, ms (server: decode + preprocess + both models, no charts)")
    rows = []
    for n, r in out["api"].items():
        c, s = r["client_ms"] or {}, r["server_total_ms"] or {}
        rows.append([n, r["requests"], r["errors"], c.get("p50", "-"), c.get("p95", "-"), s.get("p50", "-"),
                     s.get("p95", "-"), r["requests_per_s"]])  # fmt: skip
    headers = ["clients", "requests", "errors", "client p50", "client p95", "server p50", "server p95", "req/s"]
    print(table(headers, rows))
    for n, r in out["api"].items():
        for example in r["error_examples"]:
            print(f"  error at {n} clients: {example}")

    print("\n## Memory (server process + children), MB")
    print(f"idle after start: {out['rss_idle_mb']}; peak over the whole run: {out['peak_rss_mb']}")
    print("RSS by request: " + ", ".join(f"{i}: {mb}" for i, mb in out["rss_series_mb"]))

    out["headline"] = headline(out)
    print("\n## Headline\n" + "\n".join(f"- {line}" for line in out["headline"]))


def headline(out: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    cold = out["cold_start"]["median_first_prediction_s"]
    page = out["page"]["server_ms"]["total"]["p50"]
    charts = out["page"]["server_ms"].get("charts", {}).get("p50", float("nan"))
    peak = out["peak_rss_mb"]
    growth = out["rss_growth_mb"]
    lines = [
        f"cold start to first prediction: median {cold:.2f} s (target <= {TARGETS['cold_start_s']:.0f} s: "
        f"{verdict(cold <= TARGETS['cold_start_s'])})",
        f"full page request, server side (decode + preprocess + models + charts): p50 {page:.1f} ms, of which "
        f"charts {charts:.1f} ms (target <= {TARGETS['server_side_p50_ms']:.0f} ms: "
        f"{verdict(page <= TARGETS['server_side_p50_ms'])})",
        f"peak RSS {peak:.0f} MB (target <= {TARGETS['rss_mb']:.0f} MB: {verdict(peak <= TARGETS['rss_mb'])}); "
        f"RSS growth from request {out['rss_growth_from']} to the last: {growth:+.1f} MB "
        f"({verdict(abs(growth) <= 0.02 * peak + 5)} for 'flat')",
    ]
    for n, r in out["api"].items():
        c = r["client_ms"] or {}
        lines.append(f"{n} concurrent clients: {r['errors']} errors of {r['requests']}, client p50 "
                     f"{c.get('p50', float('nan')):.0f} ms, p95 {c.get('p95', float('nan')):.0f} ms, "
                     f"{r['requests_per_s']} req/s")  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(main())
