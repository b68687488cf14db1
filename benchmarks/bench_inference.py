"""Per-image latency and throughput of the two models: our ONNX packages (fp32, int8) against PyTorch eager.

    python -m benchmarks.bench_inference [--models-dir models] [--images 32] [--repeats 100] [--json FILE]

One request analyses one image. What runs per request, for each contender:

  ours          both packages (malignancy + lesion_type) in ONNX Runtime, fp32, through ModelPack; preprocessing =
                imaging.load_image + imaging.preprocess (numpy, once: both packages share their config). This is
                exactly the app's Predictor.predict.
  ours + check  the app's whole analysis: Predictor.predict with the lesion-check package too (when models/ has
                one); the difference to "ours" is what the check costs.
  ours int8     the same with both packages quantized by `python -m skin_demo.train quantize` (static int8 QDQ,
                calibrated on training-split images); skipped with a message when that cannot run.
  baseline 1    the same two networks in PyTorch eager (timm <architecture> with each package's number of labels,
                at its input size; inference_mode; random weights: speed does not depend on them), fed by OUR
                preprocessing, so the difference is the runtime alone.
  baseline 2    what the original demo ran: one torchvision ResNet-34 with a fastai head, PIL resize to 224x224 +
                to_tensor + normalise in torch per request. It answers ONE question where ours answers two, so
                comparing against it is conservative; "baseline 2 x2" runs two such ResNet-34s (two answers).

Everything runs in one process on the same images (HAM10000 test-split images when ../shared/data has them, else
generated 600x450 JPEGs), at 1 and 2 threads (ONNX Runtime intra-op threads / torch.set_num_threads). Reported:
  1. per request (batch 1, from the image file): preprocessing and model time separately, and the total;
  2. the models alone at batch 1 and 8: per-image latency (p50, p95) and throughput (images/s);
  3. ratios of each baseline to ours.
The app itself runs ONNX Runtime with min(4, cores) threads per session (2 here).
"""

from __future__ import annotations

import argparse
import itertools
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import (
    DEFAULT_DATA,
    DEFAULT_SPLIT,
    REPO_ROOT,
    Stats,
    start_report,
    table,
    time_calls,
    write_json,
)
from skin_demo import postprocess
from skin_demo.imaging import load_image, preprocess
from skin_demo.hub import bundled_folders
from skin_demo.modelpack import ModelPack, default_threads, load_package
from skin_demo.predictor import Predictor
from skin_demo.settings import DEFAULT_MODELS_DIR

CLASSIFIERS = ("malignancy", "lesion_type")
LESION_CHECK = "lesion_check"
TARGET_P50_MS = 40.0  # both models + preprocessing, per request (issue 7)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BASELINE2_SIZE = 224
FALLBACK_ARCHITECTURE = "tf_efficientnet_lite0"
OURS = "ours (ONNX fp32, both classifiers)"
OURS_INT8 = "ours (ONNX int8, both classifiers)"
OURS_CHECKED = "ours + lesion check (the app's Predictor)"


@dataclass
class Contender:
    """One way of answering a request: how to turn an image file into model input, and how to run the models."""

    name: str
    prepare: Callable[[Path], Any]  # image file -> input for `run` (batch of one)
    run: Callable[[Any], Any]  # batch -> probabilities
    stack: Callable[[list[Any]], Any]  # inputs of single images -> one batch
    note: str = ""
    # For ours: the app's own Predictor.predict, timed by itself -> (preprocess ms incl. decode, models ms).
    predictor: Predictor | None = None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp_path = Path(tmp)
        images, report = start_report(args, tmp_path)
        report.update(run_all(args, images, tmp_path))
    write_json(args.json, report)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help="folder of the packages, as SKIN_DEMO_MODELS_DIR (default: the bundled models)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HAM10000 folder (images and calibration)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split CSV: test images are benchmarked")
    parser.add_argument("--images", type=int, default=32, help="distinct images (default 32)")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per measurement at batch 1")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before each measurement")
    parser.add_argument("--phone-images", type=int, default=8,
                        help="also time preprocessing on this many 12-MP JPEGs (phone photos; 0: skip)")
    parser.add_argument("--threads", default="1,2", help="thread counts to measure (default 1,2)")
    parser.add_argument("--batches", default="1,8", help="batch sizes for the model-only table (default 1,8)")
    parser.add_argument("--int8-dir", type=Path, help="existing int8 packages (DIR/malignancy, DIR/lesion_type)")
    parser.add_argument("--calibration-images", type=int, default=64, help="for producing int8 (default 64)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--no-torch", action="store_true", help="skip both PyTorch baselines")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.batches = [int(b) for b in str(args.batches).split(",")]
    return args


def run_all(args: argparse.Namespace, images: list[Path], tmp: Path) -> dict[str, Any]:
    packs = {t: load_packs(args.models_dir, t) for t in args.threads}
    first = packs[args.threads[0]]
    configs = {task: p.config for task, p in zip(CLASSIFIERS, first, strict=True)}
    sizes = {pack.config.task: (pack.path / "model.onnx").stat().st_size / 1e6 for pack in first}
    print("Packages: " + "; ".join(f"{c.task}: {c.architecture}, {len(c.labels)} labels, {c.preprocess.size[0]} px, "
                                   f"{sizes[c.task]:.1f} MB" for c in configs.values()))  # fmt: skip
    int8_dir, int8_note = (None, "skipped (--no-int8)") if args.no_int8 else int8_packages(args, tmp)
    print(f"int8: {int8_note}")
    int8 = {t: load_packs(int8_dir, t) for t in args.threads} if int8_dir else None

    torch_mods = None if args.no_torch else import_torch()
    if torch_mods is None and not args.no_torch:
        print("PyTorch baselines: skipped (torch, torchvision or timm is not installed)")

    out: dict[str, Any] = {"packages": {k: {"architecture": c.architecture, "labels": len(c.labels),
                                             "size": list(c.preprocess.size)} for k, c in configs.items()},
                           "int8": int8_note, "per_request": {}, "models_only": {}}  # fmt: skip
    if int8 is not None:
        out["int8_agreement"] = agreement(first, int8[args.threads[0]], images)
        same = out["int8_agreement"]
        print(
            f"int8 vs fp32 on these {len(images)} images: same top label for {same['same_top_label']:.0%} "
            f"(lesion type) / {same['same_malignancy_call']:.0%} (malignancy call at the package's threshold "
            f"{same['malignancy_threshold']:.2f}); largest "
            f"probability change {same['max_abs_probability_change']:.3f}"
        )

    per_request_rows, model_rows = [], []
    for threads in args.threads:
        set_torch_threads(torch_mods, threads)
        contenders = build_contenders(packs[threads], int8[threads] if int8 else None, torch_mods, configs)
        if threads == args.threads[0]:
            for c in contenders:
                print(f"  {c.name}: {c.note}")
        prepared = {c.name: [c.prepare(p) for p in images] for c in contenders}
        for c in contenders:
            stats = per_request(c, images, args.repeats, args.warmup)
            out["per_request"].setdefault(c.name, {})[threads] = {k: v.as_dict() for k, v in stats.items()}
            steps = (stats["preprocess"], stats["models"], stats["total"])
            per_request_rows.append([c.name, threads, *(v for step in steps for v in (step.p50, step.p95))])
            for batch in args.batches:
                stats_b = models_only(c, prepared[c.name], batch, args.repeats, args.warmup)
                out["models_only"].setdefault(c.name, {}).setdefault(threads, {})[batch] = stats_b
                model_rows.append([c.name, threads, batch, stats_b["per_image_p50"], stats_b["per_image_p95"],
                                   stats_b["images_per_s"]])  # fmt: skip
            print(f"  measured {c.name} at {threads} thread(s)", file=sys.stderr, flush=True)
        checked = checked_predictor(args.models_dir, packs[threads], threads)
        if checked is not None:
            stats = per_request(checked, images, args.repeats, args.warmup)
            out["per_request"].setdefault(checked.name, {})[threads] = {k: v.as_dict() for k, v in stats.items()}
            steps = (stats["preprocess"], stats["models"], stats["total"])
            per_request_rows.append([checked.name, threads, *(v for step in steps for v in (step.p50, step.p95))])

    if args.phone_images:
        phones = phone_photos(images, args.phone_images, tmp)
        out["preprocess_by_upload"] = preprocess_by_upload(contenders, images, phones, args.repeats, args.warmup)
    print("\n## Per request (batch 1, from the JPEG file), ms")
    headers = ["contender", "threads", "preprocess p50", "p95", "models p50", "p95", "total p50", "p95"]
    print(table(headers, per_request_rows))
    print("\n## Models alone, per image, ms; throughput in images/s (one stream)")
    print(table(["contender", "threads", "batch", "per image p50", "p95", "images/s"], model_rows))
    if "preprocess_by_upload" in out:
        print("\n## Preprocessing alone (decode included), per image, by upload, ms")
        print(table(["contender", "upload", "p50", "p95"], out["preprocess_by_upload"]["rows"]))
    out["ratios"] = ratios(out, args)
    print("\n## Ratios: contender time / ours (fp32) time, p50; > 1 means ours (fp32) is faster")
    print(table(["threads", "measure", "contender", "contender / ours"], out["ratios"]["rows"]))
    out["headline"] = headline(out, args)
    print("\n## Headline\n" + "\n".join(f"- {line}" for line in out["headline"]))
    return out


def load_packs(models_dir: Path, threads: int, task_names: tuple[str, ...] = CLASSIFIERS) -> tuple[ModelPack, ...]:
    """The packages of `task_names` in `models_dir`, found as the app finds them; tasks one package answers (one
    network with a head each) share its session, as in the app."""
    folders = bundled_folders(models_dir)
    packages = {folder: load_package(folder, threads=threads) for folder in {folders[task] for task in task_names}}
    return tuple(packages[folders[task]][task] for task in task_names)


def checked_predictor(models_dir: Path, packs: tuple[ModelPack, ...], threads: int) -> Contender | None:
    """The app's full request: both classifiers plus the lesion check (None without a lesion-check package)."""
    if LESION_CHECK not in bundled_folders(models_dir):
        return None
    predictor = Predictor(*packs, lesion_check=load_packs(models_dir, threads, (LESION_CHECK,))[0])
    return Contender(OURS_CHECKED, lambda path: path, predictor.predict, list,
                     "Predictor.predict with malignancy, lesion_type and lesion_check", predictor=predictor)


def int8_packages(args: argparse.Namespace, tmp: Path) -> tuple[Path | None, str]:
    """Existing int8 packages (--int8-dir), or new ones made with the training CLI; (None, why) if impossible."""
    if args.int8_dir:
        return args.int8_dir, f"packages from {args.int8_dir}"
    if len({bundled_folders(args.models_dir)[task] for task in CLASSIFIERS}) == 1:
        return None, "skipped: the classifiers are one package with two heads, which quantize does not take"
    if not (args.data / "HAM10000_metadata.csv").is_file() or not args.split.is_file():
        return None, f"skipped: quantization calibrates on training images and {args.data} has no HAM10000"
    out_dir = tmp / "int8"
    start = time.perf_counter()
    for task in CLASSIFIERS:
        package = bundled_folders(args.models_dir)[task]
        command = [sys.executable, "-m", "skin_demo.train", "quantize", str(package), "--data", str(args.data),
                   "--split", str(args.split), "--out", str(out_dir / task),
                   "--calibration-images", str(args.calibration_images)]  # fmt: skip
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"skipped: `{' '.join(command[1:5])} ...` failed: {reason}"
    seconds = time.perf_counter() - start
    return out_dir, (
        f"made with `python -m skin_demo.train quantize` ({args.calibration_images} training-split calibration "
        f"images per model, {seconds:.0f} s for both)"
    )


def import_torch() -> dict[str, Any] | None:
    try:
        import timm
        import torch
        import torchvision
        import torchvision.transforms.functional as tf
    except ImportError:
        return None
    torch.set_num_interop_threads(1)
    return {"torch": torch, "timm": timm, "torchvision": torchvision, "tf": tf}


def set_torch_threads(mods: dict[str, Any] | None, threads: int) -> None:
    if mods is not None:
        mods["torch"].set_num_threads(threads)


def build_contenders(packs, int8_packs, mods, configs) -> list[Contender]:
    mal, les = packs
    cfg = mal.config.preprocess
    # As Predictor does: JPEGs are decoded at the reduced scale the model input needs.
    draft = max(p.config.preprocess.resize_shorter_side for p in packs)

    def ours_prepare(path: Path) -> np.ndarray:
        return preprocess(load_image(path, draft_size=draft), cfg)[np.newaxis]

    def numpy_stack(items: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(items)

    if les.config.preprocess != cfg:
        raise SystemExit("the two packages have different preprocessing; this benchmark assumes they share it")
    ours = Predictor(mal, les)
    contenders = [
        Contender(OURS, ours_prepare, lambda x: ours.outputs({cfg: x}), numpy_stack,
                  "the app's Predictor.predict: load_image + preprocess, both packages via ModelPack (one run of a "
                  "graph that answers both)", predictor=ours),
    ]  # fmt: skip
    if int8_packs is not None:
        qmal, qles = int8_packs
        contenders.append(
            Contender(OURS_INT8, ours_prepare, lambda x: (qmal.probabilities(x), qles.probabilities(x)), numpy_stack,
                      "Predictor.predict with both int8 packages", predictor=Predictor(qmal, qles))
        )  # fmt: skip
    if mods is None:
        return contenders
    torch, timm, torchvision, tf = mods["torch"], mods["timm"], mods["torchvision"], mods["tf"]

    def eager(config) -> tuple[Any, str]:
        arch = config.architecture if config.architecture in timm.list_models() else FALLBACK_ARCHITECTURE
        net = timm.create_model(arch, pretrained=False, num_classes=len(config.labels)).eval()
        return net, arch

    (net_mal, arch_mal), (net_les, arch_les) = eager(configs["malignancy"]), eager(configs["lesion_type"])

    def torch_run(nets):
        def run(x):
            with torch.inference_mode():
                return [torch.softmax(net(x), dim=1) for net in nets]

        return run

    def torch_from_ours(path: Path):
        return torch.from_numpy(ours_prepare(path))

    size = cfg.size[0]
    contenders.append(
        Contender("baseline 1 (torch eager, 2 models)", torch_from_ours, torch_run([net_mal, net_les]), torch.cat,
                  f"timm {arch_mal} + {arch_les} at {size} px, same preprocessing as ours")
    )  # fmt: skip

    def fastai_prepare(path: Path):
        image = Image.open(path).convert("RGB").resize((BASELINE2_SIZE, BASELINE2_SIZE), Image.Resampling.BILINEAR)
        return tf.normalize(tf.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)

    resnets = [fastai_resnet34(torch, torchvision, 2), fastai_resnet34(torch, torchvision, 7)]
    contenders.append(
        Contender("baseline 2 (torch ResNet-34, 1 model)", fastai_prepare, torch_run(resnets[:1]), torch.cat,
                  "torchvision resnet34 + fastai head, PIL resize 224 + to_tensor + normalise (the original demo)")
    )  # fmt: skip
    contenders.append(
        Contender("baseline 2 x2 (torch ResNet-34, 2 models)", fastai_prepare, torch_run(resnets), torch.cat,
                  "two such ResNet-34s: the same two answers as ours")
    )  # fmt: skip
    return contenders


def fastai_resnet34(torch, torchvision, n_out: int):
    """torchvision ResNet-34 body + fastai's default head (concat pooling, BN, dropout, 512 hidden), eval mode."""
    nn = torch.nn

    class ConcatPool(nn.Module):
        def forward(self, x):
            return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)

    body = nn.Sequential(*list(torchvision.models.resnet34(weights=None).children())[:-2])
    head = nn.Sequential(
        ConcatPool(), nn.Flatten(), nn.BatchNorm1d(1024), nn.Dropout(0.25), nn.Linear(1024, 512, bias=False),
        nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, n_out, bias=False),
    )  # fmt: skip
    return nn.Sequential(body, head).eval()


def per_request(c: Contender, images: list[Path], repeats: int, warmup: int) -> dict[str, Stats]:
    """Batch 1 from the image file: preprocessing (decode included) and model time of each request."""
    cycle = itertools.cycle(images)
    for _ in range(warmup):
        c.run(c.prepare(next(cycle)))
    pre, models, total = [], [], []
    for _ in range(repeats):
        path = next(cycle)
        t0 = time.perf_counter()
        if c.predictor is not None:
            timings = c.predictor.predict(path).timings_ms
            t2 = time.perf_counter()
            pre.append(timings["decode"] + timings["preprocess"])
            models.append(timings["inference"])
        else:
            x = c.prepare(path)
            t1 = time.perf_counter()
            c.run(x)
            t2 = time.perf_counter()
            pre.append(1000 * (t1 - t0))
            models.append(1000 * (t2 - t1))
        total.append(1000 * (t2 - t0))
    return {"preprocess": Stats.of(pre), "models": Stats.of(models), "total": Stats.of(total)}


def models_only(c: Contender, prepared: list[Any], batch: int, repeats: int, warmup: int) -> dict[str, float]:
    """The models alone on ready-made batches of `batch` images: per-image latency and single-stream throughput."""
    batches = [c.stack([prepared[(i * batch + j) % len(prepared)] for j in range(batch)])
               for i in range(max(1, len(prepared) // batch))]  # fmt: skip
    cycle = itertools.cycle(batches)
    calls = max(3, math.ceil(repeats / batch))
    samples = time_calls(lambda: c.run(next(cycle)), calls, warmup)
    stats = Stats.of(samples)
    return {
        "batch_p50_ms": round(stats.p50, 3),
        "batch_p95_ms": round(stats.p95, 3),
        "per_image_p50": round(stats.p50 / batch, 3),
        "per_image_p95": round(stats.p95 / batch, 3),
        "images_per_s": round(1000 * batch * len(samples) / sum(samples), 1),
        "calls": len(samples),
    }


PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone camera


def phone_photos(images: list[Path], n: int, tmp: Path) -> list[Path]:
    """The first `n` benchmark images scaled up to a phone camera's size, as JPEG (what visitors upload)."""
    folder = tmp / "phone"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, source in enumerate(images[:n]):
        path = folder / f"phone_{i:02d}.jpg"
        Image.open(source).convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC).save(path, quality=92)
        paths.append(path)
    return paths


def preprocess_by_upload(contenders: list[Contender], images: list[Path], phones: list[Path], repeats: int,
                         warmup: int) -> dict[str, Any]:
    """Each contender's preprocessing (decode included) for the benchmark images and for phone-sized photos."""
    rows, values = [], {}
    size = Image.open(images[0]).size
    megabytes = np.mean([p.stat().st_size for p in phones]) / 1e6
    sets = [(f"{size[0]}x{size[1]} (benchmark images)", images),
            (f"{PHONE_SIZE[0]}x{PHONE_SIZE[1]} phone photo, {megabytes:.1f} MB", phones)]
    seen = set()
    for c in contenders:
        if c.prepare in seen:  # the int8 and fp32 packages share one preprocessing
            continue
        seen.add(c.prepare)
        for label, paths in sets:
            cycle = itertools.cycle(paths)
            stats = Stats.of(time_calls(lambda: c.prepare(next(cycle)), max(len(paths), repeats // 2), warmup))
            values[f"{c.name} | {label}"] = stats.as_dict()
            rows.append([c.name, label, stats.p50, stats.p95])
    return {"rows": rows, "values": values}


def agreement(fp32, int8, images: list[Path]) -> dict[str, float]:
    """How far the int8 packages' answers are from fp32's on the benchmark images."""
    a, b = Predictor(*fp32), Predictor(*int8)
    same_top, same_call, largest = [], [], 0.0
    for path in images:
        pa, pb = a.predict(path), b.predict(path)
        same_top.append(pa.lesion_type_top[0].label == pb.lesion_type_top[0].label)
        same_call.append(pa.malignancy_flag.flagged == pb.malignancy_flag.flagged)
        diffs = [abs(pa.lesion_type[k] - pb.lesion_type[k]) for k in pa.lesion_type]
        diffs += [abs(pa.malignancy[k] - pb.malignancy[k]) for k in pa.malignancy]
        largest = max(largest, *diffs)
    return {
        "same_top_label": float(np.mean(same_top)),
        "same_malignancy_call": float(np.mean(same_call)),
        "malignancy_threshold": round(postprocess.decision_threshold(fp32[0].config), 4),
        "max_abs_probability_change": round(largest, 4),
    }


def ratios(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows, values = [], {}
    for threads in args.threads:
        ours = out["per_request"][OURS][threads]
        ours_models = out["models_only"][OURS][threads]
        for name in out["per_request"]:
            if name in (OURS, OURS_CHECKED):
                continue
            theirs = out["per_request"][name][threads]
            for measure, a, b in [
                ("request total (batch 1)", theirs["total"]["p50"], ours["total"]["p50"]),
                ("models only (batch 1)", theirs["models"]["p50"], ours["models"]["p50"]),
            ]:
                values[(threads, measure, name)] = a / b
                rows.append([threads, measure, name, f"{a / b:.2f}x"])
            for batch in args.batches[1:]:
                a = out["models_only"][name][threads][batch]["per_image_p50"]
                b = ours_models[batch]["per_image_p50"]
                values[(threads, f"models only (batch {batch})", name)] = a / b
                rows.append([threads, f"models only (batch {batch}), per image", name, f"{a / b:.2f}x"])
    return {"rows": rows, "values": {" | ".join(map(str, k)): round(v, 3) for k, v in values.items()}}


def headline(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    app_threads = default_threads() if default_threads() in args.threads else args.threads[-1]
    how = "as the app runs" if app_threads == default_threads() else f"the app runs {default_threads()}"
    ours = out["per_request"][OURS][app_threads]
    lines = [
        f"ours, both models + preprocessing, batch 1, {app_threads} thread(s) ({how}): "
        f"p50 {ours['total']['p50']:.1f} ms, p95 {ours['total']['p95']:.1f} ms (target p50 <= {TARGET_P50_MS:g} ms: "
        f"{'met' if ours['total']['p50'] <= TARGET_P50_MS else 'MISSED'}); preprocessing p50 "
        f"{ours['preprocess']['p50']:.1f} ms, models p50 {ours['models']['p50']:.1f} ms"
    ]
    if OURS_CHECKED in out["per_request"]:
        checked = out["per_request"][OURS_CHECKED][app_threads]["total"]
        lines.append(f"with the lesion check (the app's whole analysis): p50 {checked['p50']:.1f} ms, p95 "
                     f"{checked['p95']:.1f} ms; the check costs {checked['p50'] - ours['total']['p50']:.1f} ms p50")
    values = out["ratios"]["values"]
    for name, target in [("baseline 1 (torch eager, 2 models)", 1.0), ("baseline 2 (torch ResNet-34, 1 model)", 5.0),
                         ("baseline 2 x2 (torch ResNet-34, 2 models)", 5.0)]:  # fmt: skip
        key = f"{app_threads} | request total (batch 1) | {name}"
        if key in values:
            ok = values[key] >= target if target > 1 else values[key] > target
            wanted = "> 1" if target == 1 else ">= 5"
            lines.append(f"vs {name}: {values[key]:.2f}x faster per request (target {wanted}x: "
                         f"{'met' if ok else 'MISSED'})")  # fmt: skip
    if OURS_INT8 in out["per_request"]:
        q = out["per_request"][OURS_INT8][app_threads]
        lines.append(f"int8: models p50 {q['models']['p50']:.1f} ms vs fp32 {ours['models']['p50']:.1f} ms "
                     f"({ours['models']['p50'] / q['models']['p50']:.2f}x)")  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(main())
