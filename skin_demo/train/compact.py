"""`python -m skin_demo.train compact PACKAGE --out DIR --ham ../shared/data/ham10000
    --split models/ham10000_split.csv --isic2017 ../shared/data/isic2017 --clinical ../shared/data/clinical
    [--lesion-type DIR] [--not-lesion ../shared/data/not_lesion]`

A lighter on-device load: rewrites a finished package's weights as int8 (`weight_storage.with_int8_weights`;
float32 compute; the biases corrected for the rounding's mean shift on CALIBRATION_IMAGES images of each source's
TRAIN split) and writes it to DIR only if no source's validation metric drops by more than --max-change
(default MAX_METRIC_CHANGE; every metric judged is higher-is-better, and a gain is not held against the int8
file). Both packages run on each source's VALIDATION split (the test split stays for reporting) through the serving
path (`load_image`, `preprocess`, `ModelPack`, `postprocess`), and what the package is judged on is compared:
malignancy ROC AUC and sensitivity / specificity at the threshold of the source's image domain (a domain decided on
the lesion-type sum needs --lesion-type), lesion-type balanced accuracy, lesion-check pass rate and the share of
passed images given their own domain, and for a lesion check also the share of --not-lesion validation photos it
rejects. DIR keeps the source's config (its provenance gains the per-source change), card and eval/: the recorded
test figures are the source package's until `evaluate DIR` (`lesion-check --measure DIR` for a lesion check)
measures the new file.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from skin_demo.config import CONFIG_FILE, MODEL_FILE, README_FILE, PackageConfig
from skin_demo.imaging import ImageError
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.postprocess import LESION_TYPE_SUM, score_from
from skin_demo.train.data import DataError, Sample
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.evaluate import (
    DEFAULT_BATCH_SIZE,
    EVAL_DIR,
    EvaluationError,
    HeldOutSet,
    held_out_sets,
    label_samples,
    predict_samples,
    preprocessed_batches,
    report_for,
)
from skin_demo.train.lesion_check.data import split_not_lesion
from skin_demo.train.lesion_check.measure import served_calls
from skin_demo.train.package_files import write_package
from skin_demo.train.sources import DOMAIN_OF_SOURCE
from skin_demo.train.weight_storage import INT8, with_int8_weights

CALIBRATION_IMAGES = 16  # per source, from its train split: the bias correction's mean inputs
MAX_METRIC_CHANGE = 0.005  # the most any validation metric of any source may drop for the int8 package to ship
JUDGED_ON = {"malignancy": ("roc_auc", "sensitivity", "specificity"), "lesion_type": ("balanced_accuracy",),
             "lesion_check": ("pass_rate", "domain_rate")}
NOT_LESION_METRIC = "rejection_rate"  # what a lesion check is judged on for the not_lesion photos


class CompactError(RuntimeError):
    """The int8 package cannot be made or does not keep the source's numbers; the message says why."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `compact` subcommand."""
    parser = subparsers.add_parser(
        "compact", help="store a package's weights as int8 (float32 compute) if validation metrics hold",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", type=Path, help="single-task package folder, e.g. runs/RUN/packages/malignancy")
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) folder for the int8 package")
    add_data_sources(parser, uses="the val subsets")
    parser.add_argument("--lesion-type", type=Path,
                        help="lesion-type package, for a malignancy package that decides a domain on its sum")
    parser.add_argument("--not-lesion", type=Path,
                        help="not_lesion folder, for a lesion check: its validation photos must still be rejected")
    parser.add_argument("--max-change", type=float, default=MAX_METRIC_CHANGE,
                        help=f"largest drop of any validation metric the int8 package may ship with "
                             f"(default {MAX_METRIC_CHANGE})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores, at most 4)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The `compact` command; returns the process exit code (1 when refused or on bad input)."""
    try:
        if args.out.resolve() == args.package.resolve():
            raise CompactError(f"--out {args.out} is the source package: write the int8 package to its own folder")
        if args.out.exists() and any(args.out.iterdir()):
            raise CompactError(f"--out {args.out} exists and is not empty: choose a new folder or empty it")
        source = ModelPack.load(args.package, threads=args.threads)
        lesion_type = ModelPack.load(args.lesion_type, threads=args.threads) if args.lesion_type else None
        sets = held_out_sets(args.ham, args.split, args.isic2017, args.clinical, subset="val")
        _check_lesion_type(source, sets, lesion_type)
        negatives = not_lesion_items(source.config, args.not_lesion)
        calibration = calibration_images(args, source.config)
        proto = with_int8_weights(onnx.load(str(args.package / MODEL_FILE)), calibration=calibration)
        card = (args.package / README_FILE).read_text() if (args.package / README_FILE).is_file() else ""
        with tempfile.TemporaryDirectory(prefix="skin_demo_compact_") as tmp:
            candidate = ModelPack.load(write_package(Path(tmp), proto, source.config, card), threads=args.threads)
            changes = {s.source: compare_on(s, source, candidate, lesion_type, args.batch_size) for s in sets}
            if negatives is not None:
                changes[negatives.source] = compare_not_lesion(negatives, source, candidate, args.batch_size)
        print(format_table(args.package, changes, args.max_change))
        too_low = metrics_too_low(changes, args.max_change)
        if too_low:
            raise CompactError(f"int8 weights lower {', '.join(too_low)} (limit {args.max_change}): "
                               f"{args.out} not written; keep the source package")
        config = dataclasses.replace(source.config, provenance={
            **source.config.provenance,
            "weights": INT8,
            "int8_converted_from": source.config.provenance.get("weights", "float32"),
            "int8_bias_correction": f"{len(calibration)} images: {CALIBRATION_IMAGES} (seeded) of each source's "
                                    "train split",
            "int8_max_probability_change": max(c["max_probability_change"] for c in changes.values()),
            "int8_validation_change": {"limit": args.max_change, "per_source": changes},
        })
        write_package(args.out, proto, config, card)
        if (args.package / EVAL_DIR).is_dir():
            shutil.copytree(args.package / EVAL_DIR, args.out / EVAL_DIR)
        ModelPack.load(args.out, threads=1)  # proves config.json and the embedded copy agree
    except (CompactError, PackageError, DataError, ImageError, EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sizes = [(folder / MODEL_FILE).stat().st_size / 1e6 for folder in (args.package, args.out)]
    measure = "lesion-check --measure" if source.config.task == "lesion_check" else "evaluate"
    print(f"wrote {args.out}: model.onnx {sizes[0]:.2f} -> {sizes[1]:.2f} MB; its {CONFIG_FILE} metrics and card "
          f"are still the source's test figures (`python -m skin_demo.train {measure} {args.out} ...` re-measures)")
    return 0


def calibration_images(args: argparse.Namespace, config: PackageConfig) -> np.ndarray:
    """CALIBRATION_IMAGES seeded images of each source's train split, preprocessed for `config`: never the
    validation images the int8 package is then judged on."""
    sets = held_out_sets(args.ham, args.split, args.isic2017, args.clinical, subset="train", limit=CALIBRATION_IMAGES)
    samples = [sample for held_out in sets for sample in held_out.samples]
    return np.concatenate(list(preprocessed_batches(samples, config.preprocess)))


def not_lesion_items(config: PackageConfig, root: Path | None) -> HeldOutSet | None:
    """The not_lesion validation photos a lesion check is judged on (the seeded split it was trained with); None
    for the classifiers. Raises CompactError for a lesion check without --not-lesion."""
    if config.task != "lesion_check":
        return None
    if root is None:
        raise CompactError("a lesion check must go on rejecting what is not a lesion: pass --not-lesion "
                           "../shared/data/not_lesion")
    seed = config.provenance.get("args", {}).get("seed", 0)
    items = tuple(item for item in split_not_lesion(root, seed=seed) if item.subset == "val")
    return HeldOutSet("not_lesion", f"not_lesion (seeded split, seed {seed}):val", items)


def compare_not_lesion(negatives: HeldOutSet, source: ModelPack, candidate: ModelPack,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, Any]:
    """What `candidate` changes against `source` (two lesion checks) on not_lesion photos, read as the app reads
    them: the rejection rate, the largest probability change and inference ms per image, in `compare_on`'s form."""
    items = negatives.samples
    probs, seconds = predict_samples([source, candidate], items, batch_size=batch_size)
    before, after = (round(sum(not passed for passed, _ in served_calls(p, source.config)) / len(items), 4)
                     for p in probs)
    return {
        "split": negatives.split,
        "n": len(items),
        "metrics": {NOT_LESION_METRIC: {"source": before, "int8": after, "change": round(after - before, 4)}},
        "max_probability_change": float(f"{np.max(np.abs(probs[0] - probs[1])):.3g}"),
        "ms_per_image": {"source": round(1000 * seconds[0] / len(items), 2),
                         "int8": round(1000 * seconds[1] / len(items), 2)},
    }


def compare_on(held_out: HeldOutSet, source: ModelPack, candidate: ModelPack, lesion_type: ModelPack | None,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, Any]:
    """What `candidate` changes against `source` on one source's images: each metric the task is judged on
    (source, candidate, change), the largest probability change, and inference ms per image (batched)."""
    config = source.config
    if config.task == "lesion_check":  # every image of these sources is a lesion close-up of its source's domain
        samples, targets = list(held_out.samples), None
    else:
        samples, targets = label_samples(held_out.samples, config)
    extra = [lesion_type] if lesion_type is not None and config.task == "malignancy" else []
    probs, seconds = predict_samples([source, candidate, *extra], samples, batch_size=batch_size)
    lesion_probs = probs[2] if extra else None
    before, after = (validation_metrics(config, held_out.source, samples, targets, p, lesion_probs,
                                        lesion_type.config if extra else None) for p in probs[:2])
    return {
        "split": held_out.split,
        "n": len(samples),
        "metrics": {k: {"source": before[k], "int8": after[k],
                        "change": None if before[k] is None or after[k] is None else round(after[k] - before[k], 4)}
                    for k in JUDGED_ON[config.task]},
        "max_probability_change": float(f"{np.max(np.abs(probs[0] - probs[1])):.3g}"),
        "ms_per_image": {"source": round(1000 * seconds[0] / len(samples), 2),
                         "int8": round(1000 * seconds[1] / len(samples), 2)},
    }


def validation_metrics(config: PackageConfig, source: str, samples: Sequence[Sample], targets: np.ndarray | None,
                       probs: np.ndarray, lesion_probs: np.ndarray | None = None,
                       lesion_config: PackageConfig | None = None) -> dict[str, float | None]:
    """The numbers a package of `config.task` is judged on, made the way the app makes its calls."""
    if config.task == "lesion_check":
        calls = served_calls(probs, config)
        passed = [domain == sample.domain for (ok, domain), sample in zip(calls, samples) if ok]
        return {"pass_rate": round(len(passed) / len(calls), 4),
                "domain_rate": round(sum(passed) / len(passed), 4) if passed else None}
    report = report_for(config, targets, probs, split=None, domain=DOMAIN_OF_SOURCE.get(source, "dermoscopy"),
                        lesion_probs=lesion_probs, lesion_config=lesion_config)
    headline = report.headline()
    return {k: headline.get(k) for k in JUDGED_ON[config.task]}


def metrics_too_low(changes: dict[str, dict[str, Any]], limit: float) -> list[str]:
    """'<source> <metric> by <change>' for each metric that dropped by more than `limit`. One-sided: every metric
    judged is higher-is-better, and an int8 file that calls one more image right is no reason to refuse it."""
    return [f"{source} {metric} by {row['change']:+.4f}" for source, c in changes.items()
            for metric, row in c["metrics"].items() if (row["change"] or 0) < -limit]


def format_table(package: Path, changes: dict[str, dict[str, Any]], limit: float) -> str:
    """The per-source comparison as a small terminal table."""
    lines = [f"int8 weights against {package}, validation split (no metric may drop by more than {limit}):",
             f"  {'source':<10} {'n':>5} {'metric':<18} {'source':>8} {'int8':>8} {'change':>8}"]
    for name, c in changes.items():
        for k, (metric, row) in enumerate(c["metrics"].items()):
            cells = ["n/a" if row[key] is None else f"{row[key]:{fmt}}"
                     for key, fmt in (("source", ".4f"), ("int8", ".4f"), ("change", "+.4f"))]
            lead = f"{name:<10} {c['n']:>5}" if k == 0 else " " * 16
            lines.append(f"  {lead} {metric:<18} {cells[0]:>8} {cells[1]:>8} {cells[2]:>8}")
        ms = c["ms_per_image"]
        lines.append(f"  {'':<16} largest probability change {c['max_probability_change']:.3g}; "
                     f"{ms['source']:.1f} -> {ms['int8']:.1f} ms/image (batched)")
    return "\n".join(lines)


def _check_lesion_type(source: ModelPack, sets: list[HeldOutSet], lesion_type: ModelPack | None) -> None:
    """A malignancy package that decides a source's domain on the lesion-type sum cannot be judged without it."""
    if source.config.task != "malignancy" or lesion_type is not None:
        return
    needing = [s.source for s in sets if score_from(source.config, DOMAIN_OF_SOURCE.get(s.source, "dermoscopy"))
               == LESION_TYPE_SUM]
    if needing:
        raise CompactError(f"{source.path} decides {', '.join(needing)} images on the lesion-type sum: pass "
                           "--lesion-type DIR")
