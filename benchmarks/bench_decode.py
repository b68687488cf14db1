"""Decoding within budget: peak memory per crafted file, and an ordinary request's latency during a flood.

    python -m benchmarks.bench_decode [--flood-s 20] [--flooders 4] [--draft-size 128] [--app
        [--app-concurrency 0 6]] [--json FILE]

Measured with the serving path (`imaging.load_image` with the Predictor's draft size, then `imaging.preprocess`):
  memory    for each crafted file (made here: tiny files that decode to tens of megapixels, and big photos), a
            fresh process decodes it once; printed: its peak RSS growth (peak RSS during the decode - RSS before,
            taken after imports and one ordinary decode), wall and CPU time, and what load_image answered.
            Baseline: the same for an ordinary 600x450 JPEG, in the same run.
  flood     in one process (the server's situation: worker threads): --flooders threads decode the 7000x7000
            RGBA PNG in a loop for --flood-s seconds while the main thread analyses an ordinary 600x450 JPEG
            every 50 ms; printed: its p50 / p95 latency against the same loop without the flood (baseline,
            measured first), the flood's decode count and the process's peak RSS growth.
  app       (--app) the same through `python app.py` on the bundled models: --flooders gradio_client clients
            send the PNG (distinct copies) for 2 x --flood-s seconds while one client sends the ordinary JPEG every
            0.5 s; its client-side p50 / p95 against 12 requests without the flood, per --app-concurrency value.
Peak RSS is the kernel's VmHWM, reset before each measurement (/proc/self/clear_refs): Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import skin_demo  # noqa: F401, I001  first: it sets PILLOW_BLOCK_SIZE before benchmarks.common imports Pillow
from benchmarks.common import REPO_ROOT, Stats, print_machine, table, write_json
from skin_demo.config import PreprocessConfig
from skin_demo.imaging import ImageError, load_image, preprocess
from tests import image_files as files

ORDINARY = "ordinary 600x450 JPEG"
BUDGET_MB = 300
LATENCY_TARGET_MS = 1000
CONFIG = PreprocessConfig(size=(128, 128), crop_pct=1.0, interpolation="bicubic")  # the decode figures' config


def crafted_files(folder: Path) -> dict[str, Path]:
    """name -> file. The PNGs are streamed (no memory to make); the others are saved by Pillow from memory."""
    big = (7000, 7000)
    makers: dict[str, Callable[[Path], Path]] = {
        ORDINARY: lambda p: files.jpeg(p, 600, 450),
        "7000x7000 RGBA PNG": lambda p: files.flat_png(p, *big, "RGBA"),
        "7000x7000 16-bit grey PNG": lambda p: files.flat_png(p, *big, "L", 16),
        "7000x7000 16-bit RGB PNG": lambda p: files.flat_png(p, *big, "RGB", 16),
        "7000x7000 palette PNG": lambda p: files.flat_png(p, *big, "P"),
        "7000x7000 JPEG": lambda p: files.big_image(p, *big, "RGB", "JPEG", quality=90),
        "5000x5000 progressive 4:4:4 JPEG": lambda p: files.big_image(
            p, 5000, 5000, "RGB", "JPEG", quality=90, progressive=True, subsampling=0
        ),
        "5000x5000 progressive CMYK JPEG": lambda p: files.big_image(
            p, 5000, 5000, "CMYK", "JPEG", quality=90, progressive=True
        ),
        "7000x7000 progressive JPEG": lambda p: files.big_image(p, *big, "RGB", "JPEG", quality=90, progressive=True),
        "7000x7000 CMYK JPEG": lambda p: files.big_image(p, *big, "CMYK", "JPEG", quality=90),
        "4000x4000 RGBA WebP (lossless)": lambda p: files.big_image(p, 4000, 4000, "RGBA", "WEBP", lossless=True),
        "7000x7000 RGBA WebP (lossless)": lambda p: files.big_image(p, *big, "RGBA", "WEBP", lossless=True),
        "7000x7000 RGBA TIFF (deflate)": lambda p: files.big_image(p, *big, "RGBA", "TIFF", compression="tiff_deflate"),
        "7000x7000 float TIFF (deflate)": lambda p: files.big_image(p, *big, "F", "TIFF", compression="tiff_deflate"),
        "7000x7000 GIF": lambda p: files.big_image(p, *big, "L", "GIF"),
    }
    suffix = {"PNG": ".png", "JPEG": ".jpg", "WebP": ".webp", "TIFF": ".tif", "GIF": ".gif"}
    out = {}
    for i, (name, make) in enumerate(makers.items()):
        ext = next(v for k, v in suffix.items() if k in name)
        out[name] = make(folder / f"{i:02d}{ext}")
    return out


def analyse(path: Path, draft_size: int) -> str:
    """The serving path for one file; what it answered, in words."""
    try:
        rgb = load_image(path, draft_size=draft_size)
    except ImageError as exc:
        return f"refused: {exc}"
    preprocess(rgb, CONFIG)
    return f"decoded to {rgb.size[0]}x{rgb.size[1]}"


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its peak since the last reset (VmHWM), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark to the current RSS and return that. (ru_maxrss cannot be reset, and after
    fork + exec it starts at the parent's size, which would hide a child's growth.)"""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb()


def child(paths: list[Path], warmup: Path, draft_size: int, rounds: int = 1) -> None:
    """Decode `paths` in this fresh process, one thread each (`rounds` times), after one ordinary decode; print
    the figures as JSON."""
    analyse(warmup, draft_size)
    before = reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    answers: list[str] = []

    def decode(path: Path) -> None:
        for _ in range(rounds):
            answers.append(analyse(path, draft_size))

    threads = [threading.Thread(target=decode, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({
        "peak_rss_growth_mb": round(rss_mb("VmHWM") - before, 1),
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "answers": answers,
    }))  # fmt: skip


def child_command(paths: list[Path], warmup: Path, draft_size: int, rounds: int = 1) -> list[str]:
    """The command that runs `child` (run it with the repository root as working directory)."""
    return [sys.executable, "-m", "benchmarks.bench_decode", "--warmup", str(warmup), "--draft-size",
            str(draft_size), "--rounds", str(rounds), "--child", *map(str, paths)]  # fmt: skip


def measure_memory(crafted: dict[str, Path], draft_size: int) -> list[dict[str, Any]]:
    rows = []
    for name, path in crafted.items():
        command = child_command([path], crafted[ORDINARY], draft_size)
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["answer"] = result.pop("answers")[0]
        rows.append({"file": name, "file_kb": round(path.stat().st_size / 1024, 1), **result})
        print(f"  {name}: +{result['peak_rss_growth_mb']} MB, {result['cpu_s']} s CPU, {result['answer'][:70]}",
              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def ordinary_latencies(path: Path, draft_size: int, duration_s: float, interval_s: float = 0.05) -> list[float]:
    samples = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        start = time.perf_counter()
        analyse(path, draft_size)
        samples.append(1000 * (time.perf_counter() - start))
        time.sleep(interval_s)
    return samples


def measure_flood(ordinary: Path, bomb: Path, draft_size: int, flooders: int, flood_s: float) -> dict[str, Any]:
    baseline = Stats.of(ordinary_latencies(ordinary, draft_size, min(flood_s, 10.0)))
    before = reset_peak_rss()
    stop = threading.Event()
    answers: list[str] = []

    def flood() -> None:
        while not stop.is_set():
            answers.append(analyse(bomb, draft_size))

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(flooders)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let the flood start
    flooded = Stats.of(ordinary_latencies(ordinary, draft_size, flood_s))
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "baseline": baseline.as_dict(),
        "flooded": flooded.as_dict(),
        "p95_ratio": round(flooded.p95 / baseline.p95, 2),
        "flood_decodes": sum(a.startswith("decoded") for a in answers),
        "flood_refused": sum(a.startswith("refused") for a in answers),
        "flood_peak_rss_growth_mb": round(rss_mb("VmHWM") - before, 1),
    }


def measure_app(
    folder: Path, ordinary: Path, clients: int, flood_s: float, concurrency: int | None
) -> dict[str, Any]:
    """`python app.py` (bundled models) flooded over HTTP by `clients` gradio_client clients sending 7000x7000 RGBA
    PNGs (distinct files: the server analyses each upload once); an ordinary request every 0.5 s."""
    from gradio_client import Client, handle_file  # only this part needs the app's client

    bombs = [files.flat_png(folder / f"bomb_{i}.png", 7000, 7000, "RGBA", level=i) for i in range(64)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKIN_DEMO_", "GRADIO_"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(_free_port()),
               GRADIO_TEMP_DIR=str(folder / "gradio_tmp"),
               SKIN_DEMO_EXAMPLES_DIR=str(folder / "no_examples"))  # fmt: skip
    if concurrency:
        env["SKIN_DEMO_CONCURRENCY"] = str(concurrency)
    url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
    app = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            if app.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"python app.py did not start (exit code {app.poll()})")
            try:
                urllib.request.urlopen(url + "config", timeout=5).close()
                break
            except OSError:
                time.sleep(1)

        def request(client: Any, path: Path) -> tuple[float, bool]:
            start = time.perf_counter()
            try:
                client.submit(handle_file(str(path)), api_name="/predict").result(timeout=300)
                ok = True
            except Exception:  # a refusal or a timeout counts as a failed request, not a crash of the benchmark
                ok = False
            return 1000 * (time.perf_counter() - start), ok

        main_client = Client(url, verbose=False, ssl_verify=False)
        baseline = [request(main_client, ordinary)[0] for _ in range(12)]
        stop = threading.Event()
        flood: list[bool] = []

        def flooder(start: int) -> None:
            client = Client(url, verbose=False, ssl_verify=False)
            i = start
            while not stop.is_set():
                flood.append(request(client, bombs[i % len(bombs)])[1])
                i += clients

        threads = [threading.Thread(target=flooder, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        flooded, failed = [], 0
        end = time.monotonic() + flood_s
        while time.monotonic() < end:
            ms, ok = request(main_client, ordinary)
            flooded.append(ms)
            failed += not ok
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            app.kill()
    return {
        "concurrency": concurrency or "default",
        "baseline": Stats.of(baseline).as_dict(),
        "flooded": Stats.of(flooded).as_dict(),
        "ordinary_failed": failed,
        "flood_requests": len(flood),
        "flood_answered": sum(flood),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-s", type=float, default=20.0, help="seconds of flood (default 20)")
    parser.add_argument("--flooders", type=int, default=4, help="threads decoding the bomb (default 4)")
    parser.add_argument("--draft-size", type=int, default=CONFIG.resize_shorter_side,
                        help="load_image's draft_size, as the Predictor passes it (default: 128 px models)")
    parser.add_argument("--app", action="store_true",
                        help="also flood `python app.py` (bundled models) over HTTP with --flooders clients")
    parser.add_argument("--app-concurrency", type=int, nargs="*", default=[0],
                        help="SKIN_DEMO_CONCURRENCY values to run the app flood with (0: the app's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", type=Path, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.warmup, args.draft_size, args.rounds)
        return 0

    info, busy = print_machine()
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        print("making the crafted files ...", file=sys.stderr, flush=True)
        crafted = crafted_files(Path(tmp))
        print("memory, one fresh process per file ...", file=sys.stderr, flush=True)
        memory = measure_memory(crafted, args.draft_size)
        print(f"flood: {args.flooders} threads for {args.flood_s:g} s ...", file=sys.stderr, flush=True)
        flood = measure_flood(crafted[ORDINARY], crafted["7000x7000 RGBA PNG"], args.draft_size, args.flooders,
                              args.flood_s)  # fmt: skip
        app = []
        for concurrency in args.app_concurrency if args.app else []:
            print(f"app flood (concurrency {concurrency or 'default'}) ...", file=sys.stderr, flush=True)
            app.append(measure_app(Path(tmp), crafted[ORDINARY], args.flooders, args.flood_s * 2, concurrency or None))

    print(f"\n## Peak RSS growth per file (budget {BUDGET_MB} MB; load_image draft_size={args.draft_size})\n")
    ordinary_mb = memory[0]["peak_rss_growth_mb"]
    print(table(
        ["file", "size kB", "peak RSS growth MB", "vs ordinary", "wall s", "CPU s", "answer"],
        [[r["file"], r["file_kb"], r["peak_rss_growth_mb"], f"+{r['peak_rss_growth_mb'] - ordinary_mb:.0f} MB",
          r["wall_s"], r["cpu_s"], r["answer"][:60]] for r in memory],
    ))  # fmt: skip
    worst = max(memory, key=lambda r: r["peak_rss_growth_mb"])
    verdict = "within" if worst["peak_rss_growth_mb"] <= BUDGET_MB else "OVER"
    print(f"\nworst: {worst['file']} +{worst['peak_rss_growth_mb']} MB ({verdict} the {BUDGET_MB} MB budget)")

    print(f"\n## An ordinary request while {args.flooders} threads decode 7000x7000 RGBA PNGs "
          f"for {args.flood_s:g} s\n")  # fmt: skip
    base, under = flood["baseline"], flood["flooded"]
    print(table(
        ["", "n", "p50 ms", "p95 ms"],
        [["baseline (no flood)", base["n"], base["p50"], base["p95"]],
         ["during the flood", under["n"], under["p50"], under["p95"]]],
    ))  # fmt: skip
    print(f"\np95 ratio flooded / baseline: {flood['p95_ratio']}x; p95 {under['p95']:.0f} ms "
          f"({'within' if under['p95'] <= LATENCY_TARGET_MS else 'OVER'} the {LATENCY_TARGET_MS} ms target); "
          f"{flood['flood_decodes']} flood decodes, {flood['flood_refused']} refused as busy; "
          f"peak RSS growth of this process during the flood +{flood['flood_peak_rss_growth_mb']} MB")  # fmt: skip
    if app:
        print(f"\n## `python app.py` while {args.flooders} clients send 7000x7000 RGBA PNGs for "
              f"{args.flood_s * 2:g} s (an ordinary 600x450 JPEG every 0.5 s, client-side latency)\n")  # fmt: skip
        print(table(
            ["SKIN_DEMO_CONCURRENCY", "baseline p50 ms", "p95 ms", "flooded p50 ms", "p95 ms", "ordinary failed",
             "flood answered / sent"],
            [[r["concurrency"], r["baseline"]["p50"], r["baseline"]["p95"], r["flooded"]["p50"], r["flooded"]["p95"],
              r["ordinary_failed"], f"{r['flood_answered']} / {r['flood_requests']}"] for r in app],
        ))  # fmt: skip
    write_json(args.json, {"machine": info, "busy_processes": busy, "args": vars(args), "memory": memory,
                           "flood": flood, "app": app})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
