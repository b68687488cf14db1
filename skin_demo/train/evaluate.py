"""Evaluate an exported model package on a held-out split, the way the app will run it.

`python -m skin_demo.train evaluate models/<task> --data <HAM10000> --split models/ham10000_split.csv`

The numbers come from the package's ONNX file through `ModelPack` (ONNX Runtime), with images read by
`imaging.load_image` and `imaging.preprocess` driven by the package's own config: the exact serving path, not the
training framework. The report goes to `<package>/eval/` (metrics.json, EVAL.md, plots), its headline numbers into
the package config's `metrics` (config.json and the copy inside model.onnx), and the model card is regenerated.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

from skin_demo.config import PackageConfig, PreprocessConfig
from skin_demo.imaging import ImageError, load_image, preprocess
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.train.card import write_model_card
from skin_demo.train.data import IGNORE_LABEL, DataError, Sample, label_index, read_ham10000, read_split, task_labels
from skin_demo.train.metrics import EvalReport, compute_report
from skin_demo.train.report import write_report

EVAL_DIR = "eval"
DEFAULT_BATCH_SIZE = 32
REPO_ROOT = Path(__file__).resolve().parents[2]


class EvaluationError(ValueError):
    """The package and the data do not fit together (unknown labels, nothing to evaluate, unreadable images)."""


def evaluate_package(
    package_dir: Path | str,
    samples: Sequence[Sample],
    *,
    split: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    pack: ModelPack | None = None,
) -> EvalReport:
    """Run the package in `package_dir` over `samples` and measure it.

    Samples without a label for the package's task (e.g. benign/malignant-only images for lesion_type) are
    skipped and counted in `report.extra["skipped_unlabelled"]`. For a two-label task the decision threshold is
    the package's `decision_threshold` (0.5 when it has none). `split` names what was evaluated in the report.
    `pack` reuses an already loaded package. Raises PackageError for a broken package, EvaluationError when the
    samples do not fit it, ImageError for an unreadable image.
    """
    package_dir = Path(package_dir)
    pack = pack or ModelPack.load(package_dir, threads=threads)
    config = pack.config
    labelled, targets = label_samples(samples, config)
    start = time.perf_counter()
    (probs,), seconds = predict_samples([pack], labelled, batch_size=batch_size)
    report = report_for(config, targets, probs, split=split)
    return dataclasses.replace(
        report,
        extra={
            **report.extra,
            "package": _display_path(package_dir),
            "runtime": f"ONNX Runtime {ort.__version__} (CPU)",
            "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "skipped_unlabelled": len(samples) - len(labelled),
            "seconds": round(time.perf_counter() - start, 1),
            "inference_ms_per_image": round(1000 * seconds[0] / max(1, len(labelled)), 2),
        },
    )


def report_for(config: PackageConfig, targets: np.ndarray, probs: np.ndarray, *, split: str | None) -> EvalReport:
    """`compute_report` with the package's labels, task and (two-label task) decision threshold."""
    binary = len(config.labels) == 2
    return compute_report(
        targets,
        probs,
        config.labels,
        task=config.task,
        positive_label=_positive_label(config) if binary else None,
        threshold=(config.decision_threshold if config.decision_threshold is not None else 0.5) if binary else None,
        split=split,
    )


def label_samples(samples: Sequence[Sample], config: PackageConfig) -> tuple[list[Sample], np.ndarray]:
    """The samples that have a label for the package's task, and their label indices in the package's order.

    Raises EvaluationError when a label is not one the package knows, or no sample is left.
    """
    try:
        codes = task_labels(config.task)
    except ValueError as exc:
        raise EvaluationError(f"cannot evaluate task {config.task!r}: {exc}") from None
    kept, targets = [], []
    for sample in samples:
        index = label_index(sample, config.task)
        if index == IGNORE_LABEL:
            continue
        code = codes[index]
        if code not in config.labels:
            raise EvaluationError(
                f"image {sample.image_id} has label {code!r}, which the {config.task} package does not have "
                f"(its labels: {list(config.labels)})"
            )
        kept.append(sample)
        targets.append(config.labels.index(code))
    if not kept:
        raise EvaluationError(f"no images with a {config.task} label to evaluate ({len(samples)} given)")
    return kept, np.asarray(targets, dtype=np.int64)


def predict_samples(
    packs: Sequence[ModelPack], samples: Sequence[Sample], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[list[np.ndarray], list[float]]:
    """Probabilities [N, K] of each package for `samples`, and each package's total inference seconds.

    Every image is read and preprocessed once and fed to all packages, which must share one preprocessing
    config (e.g. a model and its int8 copy). Raises EvaluationError if they do not, ImageError for a bad image.
    """
    if not packs:
        raise ValueError("predict_samples needs at least one package")
    pre = packs[0].config.preprocess
    for pack in packs[1:]:
        if pack.config.preprocess != pre:
            raise EvaluationError(f"{pack.path}: preprocessing differs from {packs[0].path}; evaluate them separately")
    outputs: list[list[np.ndarray]] = [[] for _ in packs]
    seconds = [0.0 for _ in packs]
    for batch in preprocessed_batches(samples, pre, batch_size=batch_size):
        for i, pack in enumerate(packs):
            start = time.perf_counter()
            outputs[i].append(pack.probabilities(batch))
            seconds[i] += time.perf_counter() - start
    return [np.concatenate(chunks) for chunks in outputs], seconds


def preprocessed_batches(
    samples: Sequence[Sample], pre: PreprocessConfig, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[np.ndarray]:
    """float32 batches [B, 3, H, W] of `samples` through `imaging.load_image` and `imaging.preprocess`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # The same JPEG draft size the app's Predictor uses, so evaluation decodes exactly as serving does.
    draft_size = math.floor(min(pre.size) / pre.crop_pct)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        arrays = []
        for sample in chunk:
            try:
                image = load_image(sample.path, draft_size=draft_size)
            except ImageError as exc:
                raise ImageError(f"{sample.path}: {exc}") from None
            arrays.append(preprocess(image, pre))
        yield np.stack(arrays)


def record_evaluation(package_dir: Path | str, report: EvalReport) -> PackageConfig:
    """Make `report` the package's official evaluation.

    Writes the report into `<package>/eval/`, merges its headline numbers into the config's `metrics`
    (config.json and the copy embedded in model.onnx, via package_files.write_package_config), checks the package
    still loads, and regenerates the model card. Returns the new config.
    """
    from skin_demo.train.package_files import write_package_config

    package_dir = Path(package_dir)
    old = ModelPack.load(package_dir, threads=1).config
    write_report(report, package_dir / EVAL_DIR, title=f"Evaluation: {old.task} package")
    config = dataclasses.replace(old, metrics={**old.metrics, **report.headline()})
    write_package_config(package_dir, config)
    config = ModelPack.load(package_dir, threads=1).config  # proves config.json and the embedded copy still agree
    write_model_card(package_dir, config, report)
    return config


def select_samples(
    samples: Sequence[Sample], split: dict[str, str], subset: str, *, limit: int | None = None, seed: int = 0
) -> list[Sample]:
    """The samples the split assigns to `subset`, sorted by image id; `limit` keeps a seeded random share of them.

    Raises EvaluationError when the split has no images of that subset among `samples`.
    """
    chosen = sorted((s for s in samples if split.get(s.image_id) == subset), key=lambda s: s.image_id)
    if not chosen:
        found = sorted(set(split.values()))
        raise EvaluationError(f"the split has no {subset!r} images among the data (its subsets: {found})")
    if limit is not None and limit < len(chosen):
        order = np.random.default_rng(seed).permutation(len(chosen))[:limit]
        chosen = [chosen[i] for i in sorted(order)]
    return chosen


def split_name(split_path: Path, subset: str) -> str:
    """How a report names its data: the split file relative to the repository (or as given) plus the subset."""
    path = Path(split_path)
    for base in (REPO_ROOT, Path.cwd()):
        try:
            return f"{path.resolve().relative_to(base.resolve()).as_posix()}:{subset}"
        except ValueError:
            continue
    return f"{path.as_posix()}:{subset}"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate an exported package on the held-out split through ONNX Runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", type=Path, help="package folder (model.onnx + config.json), e.g. models/lesion_type")
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder (HAM10000_metadata.csv + images)")
    parser.add_argument("--split", type=Path, required=True, help="split CSV (image_id, lesion_id, dx, split)")
    parser.add_argument("--subset", default="test", help="which subset of the split to evaluate (default: test)")
    parser.add_argument(
        "--limit", type=int, help="evaluate a seeded random N of the subset (a quick check; needs --out)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write the report here and leave the package untouched (default: <package>/eval, and update the package)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores, at most 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --limit's choice of images")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The `evaluate` command; returns the process exit code."""
    if args.limit is not None and args.out is None:
        print(
            "error: --limit evaluates only part of the split; pass --out DIR so the partial report does not "
            "replace the package's evaluation",
            file=sys.stderr,
        )
        return 2
    try:
        pack = ModelPack.load(args.package, threads=args.threads)
        samples = select_samples(
            read_ham10000(args.data), read_split(args.split), args.subset, limit=args.limit, seed=args.seed
        )
        name = split_name(args.split, args.subset)
        if args.limit is not None:
            name += f" (seeded random {len(samples)} images)"
        print(f"evaluating {pack.config.task} package {args.package} on {name}: {len(samples)} images", flush=True)
        report = evaluate_package(args.package, samples, split=name, batch_size=args.batch_size, pack=pack)
        if args.out is None:
            record_evaluation(args.package, report)
            out = Path(args.package) / EVAL_DIR
            updated = f"; updated {Path(args.package) / 'config.json'} metrics and README.md"
        else:
            write_report(report, args.out, title=f"Evaluation: {report.task} package")
            out, updated = args.out, " (package left unchanged)"
    except (PackageError, DataError, ImageError, EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_line(report))
    weak = report.weak_classes()
    if weak:
        print(f"weak classes: {', '.join(weak)}")
    print(f"wrote {out}{updated}")
    return 0


def summary_line(report: EvalReport) -> str:
    """One line of headline numbers for a terminal."""
    parts = [
        f"n={report.n}",
        f"balanced_accuracy={_f(report.balanced_accuracy)}",
        f"accuracy={_f(report.accuracy)}",
        f"macro_f1={_f(report.macro_f1)}",
        f"roc_auc={_f(report.roc_auc)}",
    ]
    if report.binary is not None:
        b = report.binary
        parts += [
            f"sensitivity={_f(b.sensitivity)}",
            f"specificity={_f(b.specificity)}",
            f"threshold={b.threshold:.4f}",
        ]
    return f"{report.task}: " + " ".join(parts)


def _positive_label(config: PackageConfig) -> str:
    if len(config.malignant_labels) == 1:
        return config.malignant_labels[0]
    return "malignant" if "malignant" in config.labels else config.labels[1]


def _display_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

