"""`python -m skin_demo.train quantize PACKAGE --ham <HAM10000> --split models/ham10000_split.csv
[--isic2017 <ISIC 2017>] --out DIR [--calibration-images 200] [--evaluate]`: the command line of `quantize.py`
(see there for how), and `--evaluate`'s fp32-against-int8 comparison per source."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import onnxruntime as ort

from skin_demo.imaging import ImageError
from skin_demo.modelpack import CONFIG_FILE, MODEL_FILE, ModelPack, PackageError
from skin_demo.train import sources
from skin_demo.train.data import DataError
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.evaluate import (
    DEFAULT_BATCH_SIZE,
    TARGETS,
    EvaluationError,
    held_out_sets,
    label_samples,
    predict_samples,
    preprocessed_batches,
    record_evaluation,
    report_for,
)
from skin_demo.train.package_files import write_package_config
from skin_demo.train.quantize import (
    CALIBRATION_BATCH,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    QuantizeError,
    calibration_samples,
    compare,
    quantize_package,
)
from skin_demo.train.quantize import __doc__ as QUANTIZE_DOC
from skin_demo.train.results import Evaluation


def format_comparison(comparison: dict[str, Any], sizes: tuple[int, int]) -> str:
    """A small terminal table of `compare`'s result."""
    lines = [f"fp32 vs int8 on {comparison['split']}, {comparison['n']} images:",
             f"  {'metric':<18} {'fp32':>8} {'int8':>8} {'change':>8}"]
    for key, row in comparison["metrics"].items():
        cells = [_cell(row["fp32"]), _cell(row["int8"]), _cell(row["change"], signed=True)]
        lines.append(f"  {key:<18} {cells[0]:>8} {cells[1]:>8} {cells[2]:>8}")
    ms = comparison["ms_per_image"]
    lines += [
        f"  same predicted label for {comparison['same_label']:.1%} of images; "
        f"largest probability change {comparison['max_abs_probability_change']:.3f}",
        f"  inference {ms['fp32']:.2f} -> {ms['int8']:.2f} ms/image (batched, this machine); "
        f"model.onnx {sizes[0] / 1e6:.1f} -> {sizes[1] / 1e6:.1f} MB",
    ]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `quantize` subcommand."""
    parser = subparsers.add_parser(
        "quantize",
        help="static int8 quantization (QDQ, per-channel) calibrated on training-split images",
        description=QUANTIZE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", type=Path,
                        help="fp32 single-task package folder, e.g. runs/RUN/packages/lesion_type")
    add_data_sources(parser, uses="the train subsets for calibration, the test subsets for --evaluate", clinical=False)
    parser.add_argument("--out", type=Path, required=True, help="folder for the int8 package")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax", help="calibration method")
    parser.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor, not per channel")
    parser.add_argument(
        "--full-range", action="store_true",
        help="8-bit weights (default 7-bit: full range overflows in ORT's kernels on x86 CPUs without VNNI)",
    )
    parser.add_argument("--evaluate", action="store_true", help="evaluate fp32 and int8 on --subset and compare")
    parser.add_argument("--subset", default="test", help="subset for --evaluate (default: test)")
    parser.add_argument("--limit", type=int, help="--evaluate on a seeded random N images per source (a quick check)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The `quantize` command; returns the process exit code."""
    try:
        source = ModelPack.load(args.package)
        table = sources.label_table(args.ham, args.split, args.isic2017)
        calib = calibration_samples(sources.samples(table, "train"), args.calibration_images, seed=args.seed)
        print(f"calibrating on {len(calib)} training-split images", flush=True)
        arrays = list(preprocessed_batches(calib, source.config.preprocess, batch_size=CALIBRATION_BATCH))
        used = ", ".join(f"{n} {src}" for src, n in sorted(Counter(s.source for s in calib).items()))
        note = f"{len(calib)} training-split images ({used}), drawn in turn from each source and class"
        quantize_package(args.package, args.out, arrays, method=args.method, per_channel=not args.per_tensor,
                         reduce_range=not args.full_range, calibration_note=note)
        sizes = ((Path(args.package) / MODEL_FILE).stat().st_size, (Path(args.out) / MODEL_FILE).stat().st_size)
        print(f"wrote int8 package {args.out} (model.onnx {sizes[0] / 1e6:.1f} -> {sizes[1] / 1e6:.1f} MB)")
        if args.evaluate:
            _evaluate_both(args, source, sizes)
    except (PackageError, QuantizeError, DataError, ImageError, EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _evaluate_both(args, source: ModelPack, sizes) -> None:
    """fp32 and int8 on the same held-out images of each source: the comparison is printed and (without --limit)
    recorded in the int8 package with its own per-source evaluation."""
    int8 = ModelPack.load(args.out)
    sets = held_out_sets(args.ham, args.split, args.isic2017, subset=args.subset, limit=args.limit, seed=args.seed)
    comparisons, reports = {}, {}
    for held_out in sets:
        labelled, targets = label_samples(held_out.samples, source.config)
        (p_fp32, p_int8), seconds = predict_samples([source, int8], labelled, batch_size=args.batch_size)
        fp32_report = report_for(source.config, targets, p_fp32, split=held_out.split)
        reports[held_out.source] = report_for(int8.config, targets, p_int8, split=held_out.split)
        comparisons[held_out.source] = compare(fp32_report, reports[held_out.source], p_fp32, p_int8, seconds)
        print(format_comparison(comparisons[held_out.source], sizes))
    if args.limit is not None:
        print("(--limit: the int8 package's metrics are left empty; evaluate it on the whole split to record them)")
        return
    provenance = dict(int8.config.provenance)
    provenance["quantization"] = {**provenance["quantization"], "fp32_vs_int8": comparisons}
    write_package_config(args.out, dataclasses.replace(int8.config, provenance=provenance))
    evaluation = Evaluation(
        task=int8.config.task,
        labels=int8.config.labels,
        reports=reports,
        targets={s: t for s, t in TARGETS.get(int8.config.task, {}).items() if s in reports},
        extra={"package": str(args.out), "runtime": f"ONNX Runtime {ort.__version__} (CPU)"},
    )
    record_evaluation(args.out, evaluation)
    print(f"recorded the int8 evaluation in {Path(args.out) / 'eval'} and {Path(args.out) / CONFIG_FILE}")


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
