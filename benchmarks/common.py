"""What both benchmarks share: the machine's description, the images, percentiles and tables."""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skin_demo import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium package; Playwright drives it via executable_path
# Headless, and none of Chromium's own connections (updates, sync, ...): this machine has no outside network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ham10000"
DEFAULT_SPLIT = REPO_ROOT / "models" / "ham10000_split.csv"
VERSIONED = ("onnxruntime", "numpy", "pillow", "matplotlib", "gradio", "gradio_client", "torch", "torchvision", "timm")


def machine() -> dict[str, Any]:
    """CPU model, cores this process may use, RAM, OS, Python and library versions: what a figure depends on."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram_gb = float("nan")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma") if f in flags]
    return {
        "cpu": cpu,
        "simd": simd,
        "cores_usable": usable,
        "cores_total": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def describe_machine(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (
        f"Machine: {info['cpu']} ({'/'.join(info['simd']) or 'no AVX2'}), {info['cores_usable']} usable cores of "
        f"{info['cores_total']}, {info['ram_gb']} GB RAM, {info['os']}, Python {info['python']}\n"
        f"Versions: {versions}\nLoad average at start: {info['load_average']}"
    )


def busy_processes(threshold_pct: float = 20.0) -> list[str]:
    """Other processes using a lot of CPU right now (a benchmark next to them measures the contention)."""
    import psutil

    me = {os.getpid(), os.getppid()}
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in me]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(0.5)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= threshold_pct:
            busy.append(f"pid {p.pid} {' '.join(p.info['cmdline'] or [p.info['name']])[:80]} ({pct:.0f}% CPU)")
    return busy


def held_out_images(n: int, data: Path = DEFAULT_DATA, split: Path = DEFAULT_SPLIT, *, seed: int = 0) -> list[Path]:
    """`n` real HAM10000 images of the held-out test split (seeded choice, one per lesion), or [] if absent."""
    if not split.is_file() or not data.is_dir():
        return []
    with split.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == "test"]
    one_per_lesion = {r["lesion_id"]: r["image_id"] for r in sorted(rows, key=lambda r: r["image_id"])}
    ids = sorted(one_per_lesion.values())
    rng = np.random.default_rng(seed)
    chosen = [ids[i] for i in rng.permutation(len(ids))]
    paths = []
    for image_id in chosen:
        for folder in ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", "."):
            path = data / folder / f"{image_id}.jpg"
            if path.is_file():
                paths.append(path)
                break
        if len(paths) == n:
            break
    return paths


def generated_images(n: int, folder: Path, *, size: tuple[int, int] = (600, 450)) -> list[Path]:
    """`n` dermoscopy-sized JPEGs (HAM10000 is 600x450): skin-coloured noise with a darker blob."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        cx, cy = width * (0.4 + 0.2 * rng.random()), height * (0.4 + 0.2 * rng.random())
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < (min(width, height) * (0.2 + 0.1 * rng.random())) ** 2
        skin, lesion = np.array([224, 172, 150]), np.array([110, 70, 55]) + 40 * rng.random(3)
        pixels = np.where(inside[..., None], lesion, skin) + rng.normal(0, 8, (height, width, 3))
        path = folder / f"generated_{i:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def benchmark_images(
    n: int, tmp: Path, data: Path = DEFAULT_DATA, split: Path = DEFAULT_SPLIT
) -> tuple[list[Path], str]:
    """Real test-split images when the dataset is there, else generated ones; and a line saying which."""
    paths = held_out_images(n, data, split)
    if len(paths) == n:
        sizes = sorted({Image.open(p).size for p in paths})
        return paths, f"{n} HAM10000 test-split images ({split.name}; sizes {sizes}) from {data}"
    paths = generated_images(n, tmp / "generated")
    return paths, f"{n} generated 600x450 JPEGs (HAM10000 not found at {data})"


@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in milliseconds."""

    n: int
    p50: float
    p95: float
    mean: float
    min: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            n=len(values),
            p50=float(np.percentile(values, 50)),
            p95=float(np.percentile(values, 95)),
            mean=float(values.mean()),
            min=float(values.min()),
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    """Wall time of each of `repeats` calls of fn, in ms, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - start))
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable as plain text too)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_machine() -> tuple[dict[str, Any], list[str]]:
    """Print the machine and any CPU contention; returns both for the report."""
    info = machine()
    print(describe_machine(info))
    busy = busy_processes()
    if busy:
        print("WARNING: other processes are using the CPU; these figures include that contention:")
        print("\n".join(f"  {line}" for line in busy))
    return info, busy


def start_report(args, tmp_path: Path) -> tuple[list[Path], dict[str, Any]]:
    """Print the machine and any CPU contention, pick the images; returns them and the report's first fields."""
    info, busy = print_machine()
    images, where = benchmark_images(args.images, tmp_path, args.data, args.split)
    print(f"Images: {where}")
    return images, {"machine": info, "images": where, "busy_processes": busy, "args": vars(args)}
