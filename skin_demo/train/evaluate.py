"""Evaluate an exported model package on the held-out split of every data source, the way the app runs it.

`python -m skin_demo.train evaluate PACKAGE --ham ../shared/data/ham10000 --split models/ham10000_split.csv
    --isic2017 ../shared/data/isic2017 --clinical ../shared/data/clinical [--lesion-type DIR]`

The numbers come from the package's ONNX file through `ModelPack` (ONNX Runtime), with images read by
`imaging.load_image` and `imaging.preprocess` driven by the package's own config, and the malignancy call made by
`skin_demo.postprocess` for each source's image domain (dermoscopy or clinical): on the score and at the threshold
the package's `decision_scores` / `decision_thresholds` name for that domain (the lesion-type sum needs
`--lesion-type`): the exact serving path, not the training framework. Each source is measured on its own test
split (HAM10000: the committed lesion-grouped split; ISIC 2017: the challenge's test split; clinical photos: their
grouped split) and reported side by side: in `<package>/eval/` (metrics.json, EVAL.md, per-source plots), in the
package config's `metrics` (config.json and the copy inside model.onnx; for malignancy also `per_domain`, the
figures the page quotes) and in the regenerated model card. The side-by-side table is printed too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

from skin_demo import REPO_ROOT
from skin_demo.config import OUTPUT_NAME, README_FILE, PackageConfig, PreprocessConfig
from skin_demo.imaging import ImageError, load_image, preprocess
from skin_demo.modelpack import ModelPack, load_package
from skin_demo.postprocess import malignancy_flag, malignancy_score
from skin_demo.train import sources
from skin_demo.train.card import render_model_card, write_model_card
from skin_demo.train.combine import combined_card
from skin_demo.train.data import IGNORE_LABEL, Sample, label_index, task_labels
from skin_demo.train.metrics import compute_report
from skin_demo.train.package_files import EVAL_DIR, heads_config_json, write_package_config
from skin_demo.train.perturb import Perturbation
from skin_demo.train.results import EvalReport, Evaluation
from skin_demo.train.report import write_evaluation

DEFAULT_BATCH_SIZE = 32
# The project's targets per task and test source (issue 16: three domains), recorded with every evaluation so the
# card and the closing note say plainly which are missed.
TARGETS = {
    "lesion_type": {"ham10000": {"balanced_accuracy": 0.75}, "isic2017": {"balanced_accuracy": 0.70},
                    "clinical": {"balanced_accuracy": 0.55}},
    "malignancy": {"ham10000": {"roc_auc": 0.95, "sensitivity": 0.90}, "isic2017": {"roc_auc": 0.85},
                   "clinical": {"roc_auc": 0.85, "sensitivity": 0.85}},
}


class EvaluationError(ValueError):
    """The package and the data do not fit together (unknown labels, nothing to evaluate, unreadable images)."""


@dataclass(frozen=True)
class HeldOutSet:
    """One source's held-out images, and how reports name them (e.g. "models/ham10000_split.csv:test")."""

    source: str
    split: str
    samples: tuple[Sample, ...]


def held_out_sets(
    ham: Path,
    ham_split: Path,
    isic2017: Path | None = None,
    clinical: Path | None = None,
    *,
    subset: str = "test",
    limit: int | None = None,
    seed: int = 0,
) -> list[HeldOutSet]:
    """The `subset` images of HAM10000 (split by `ham_split`) and, when given, of ISIC 2017 (the challenge split) and
    of the clinical photos (their grouped split).

    `limit` keeps a seeded random `limit` images of each source (a quick check). Raises DataError for data that
    do not match their label files, EvaluationError when a source has no images in `subset`.
    """
    tables = [("ham10000", sources.ham10000_table(ham, ham_split), split_name(ham_split, subset))]
    if isic2017 is not None:
        tables.append(("isic2017", sources.isic2017_table(isic2017), f"{Path(isic2017).name}/labels.csv:{subset}"))
    if clinical is not None:
        tables.append(("clinical", sources.clinical_table(clinical), f"{Path(clinical).name}/labels.csv:{subset}"))
    sets = []
    for source, table, name in tables:
        chosen = sorted(sources.samples(table, subset), key=lambda s: s.image_id)
        if not chosen:
            found = sorted(set(table["split"]))
            raise EvaluationError(f"{source} has no {subset!r} images (its subsets: {found})")
        if limit is not None and limit < len(chosen):
            keep = np.random.default_rng(seed).permutation(len(chosen))[:limit]
            chosen = [chosen[i] for i in sorted(keep)]
            name += f" (seeded random {len(chosen)} images)"
        sets.append(HeldOutSet(source, name, tuple(chosen)))
    return sets


def evaluate_package(
    package_dir: Path | str,
    sets: Sequence[HeldOutSet],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    pack: ModelPack | None = None,
    lesion_type: ModelPack | None = None,
    perturb: Perturbation | None = None,
) -> Evaluation:
    """Run the package in `package_dir` over each held-out set and measure it: one `EvalReport` per source.

    `pack` reuses an already loaded package (or one head of a package with several); otherwise as
    `evaluate_heads`, for this one task.
    """
    pack = pack or ModelPack.load(package_dir, threads=threads)
    return evaluate_heads(package_dir, sets, {pack.config.task: pack}, lesion_type=lesion_type,
                          batch_size=batch_size, perturb=perturb)[pack.config.task]


def evaluate_heads(
    package_dir: Path | str,
    sets: Sequence[HeldOutSet],
    heads: Mapping[str, ModelPack],
    *,
    lesion_type: ModelPack | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    perturb: Perturbation | None = None,
) -> dict[str, Evaluation]:
    """Each head's `Evaluation` (by task) from one pass over every held-out set: each image is read (and
    perturbed) once per preprocessing config and fed to every head, so the heads of one graph share each run.

    Samples without a label for a head's task are skipped for that head and counted in its report's
    `extra["skipped_unlabelled"]`. A malignancy head's decision may be made on a lesion-type sum: that of
    `lesion_type` or, without it, of the lesion-type head among `heads`. `perturb` puts every image through a
    `perturb.Perturbation` first (the same one for every head), and the reports' split names say so. Raises
    PackageError for a broken package, EvaluationError when the samples do not fit it, ImageError for an
    unreadable image.
    """
    package_dir = Path(package_dir)
    partner = lesion_type or heads.get("lesion_type")
    scored = dict(heads)
    if "malignancy" in heads and partner is not None:
        scored["lesion_type"] = partner
    start = time.perf_counter()
    reports: dict[str, dict[str, EvalReport]] = {task: {} for task in heads}
    for held_out in sets:
        labelled = {task: label_samples(held_out.samples, pack.config) for task, pack in heads.items()}
        needed = {id(sample) for kept, _ in labelled.values() for sample in kept}
        images = [sample for sample in held_out.samples if id(sample) in needed]
        probs, seconds = _predict_tasks(scored, images, batch_size=batch_size, perturb=perturb)
        row_of = {id(sample): row for row, sample in enumerate(images)}
        domain = sources.DOMAIN_OF_SOURCE.get(held_out.source, "dermoscopy")
        split = held_out.split if perturb is None else f"{held_out.split} {perturb.describe()}"
        for task, pack in heads.items():
            kept, targets = labelled[task]
            rows = [row_of[id(sample)] for sample in kept]
            with_sum = task == "malignancy" and partner is not None
            report = report_for(pack.config, targets, probs[task][rows], split=split, domain=domain,
                                lesion_probs=probs["lesion_type"][rows] if with_sum else None,
                                lesion_config=partner.config if with_sum else None)
            reports[task][held_out.source] = dataclasses.replace(report, extra={
                "skipped_unlabelled": len(held_out.samples) - len(kept),
                "inference_ms_per_image": round(1000 * seconds[task] / len(images), 2),
            })
    extra = {
        "package": _display_path(package_dir),
        "runtime": f"ONNX Runtime {ort.__version__} (CPU)",
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return {
        task: Evaluation(task=pack.config.task, labels=pack.config.labels, reports=reports[task],
                         targets={s: t for s, t in TARGETS.get(task, {}).items() if s in reports[task]},
                         extra=extra)
        for task, pack in heads.items()
    }  # fmt: skip


def _predict_tasks(packs: Mapping[str, ModelPack], samples: Sequence[Sample], *, batch_size: int,
                   perturb: Perturbation | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """`predict_samples` by task, with one pass over the images per preprocessing config among `packs`."""
    by_config: dict[PreprocessConfig, list[str]] = {}
    for task, pack in packs.items():
        by_config.setdefault(pack.config.preprocess, []).append(task)
    probs, seconds = {}, {}
    for tasks in by_config.values():
        outputs, spent = predict_samples([packs[t] for t in tasks], samples, batch_size=batch_size, perturb=perturb)
        probs.update(zip(tasks, outputs))
        seconds.update(zip(tasks, spent))
    return probs, seconds


def report_for(config: PackageConfig, targets: np.ndarray, probs: np.ndarray, *, split: str | None,
               domain: str = "dermoscopy", lesion_probs: np.ndarray | None = None,
               lesion_config: PackageConfig | None = None) -> EvalReport:
    """`compute_report` with the package's labels; a malignancy package's score and calls come from
    `skin_demo.postprocess` for `domain` (its own P(malignant) or the lesion-type sum, flagged at that domain's
    threshold), exactly as the app makes them."""
    if len(config.labels) != 2 or len(config.malignant_labels) != 1:
        return compute_report(targets, probs, config.labels, task=config.task, split=split)
    positive = config.malignant_labels[0]
    lesion_rows = [None] * len(probs) if lesion_probs is None else [
        dict(zip(lesion_config.labels, row)) for row in lesion_probs.tolist()]
    scores = np.array([malignancy_score(domain, dict(zip(config.labels, row)), config, lesion_row, lesion_config)
                       for row, lesion_row in zip(probs.tolist(), lesion_rows)])
    flags = [malignancy_flag(score, config, domain) for score in scores]
    pos = config.labels.index(positive)
    scored = np.zeros_like(probs, dtype=np.float64)
    scored[:, pos], scored[:, 1 - pos] = scores, 1.0 - scores
    return compute_report(
        targets,
        scored,
        config.labels,
        task=config.task,
        positive_label=positive,
        threshold=flags[0].threshold,
        predicted=np.where([f.flagged for f in flags], pos, 1 - pos),
        split=split,
        score_from=flags[0].score_from,
    )


def recorded_metrics(evaluation: Evaluation) -> dict:
    """What a package's config records of its evaluation (`metrics`): each source's headline numbers and, for a
    malignancy package, the figures per image domain (`per_domain`)."""
    metrics = evaluation.headline()
    if evaluation.task == "malignancy":
        metrics["per_domain"] = domain_figures(evaluation)
    return metrics


def domain_figures(evaluation: Evaluation) -> dict[str, dict]:
    """A malignancy evaluation's held-out figures per image domain (the sources of a domain pooled): sensitivity
    and specificity at the served threshold from the summed confusion matrices, image counts, and the ROC AUC where
    the domain has one source (per source otherwise). What the page quotes for a domain."""
    out: dict[str, dict] = {}
    for source, report in evaluation.reports.items():
        if report.binary is None:
            continue
        domain = sources.DOMAIN_OF_SOURCE.get(source, "dermoscopy")
        pos = report.labels.index(report.binary.positive_label)
        matrix = np.asarray(report.confusion_matrix)
        entry = out.setdefault(domain, {"tp": 0, "fn": 0, "tn": 0, "fp": 0, "splits": [], "roc_auc_per_source": {}})
        entry["tp"] += int(matrix[pos, pos])
        entry["fn"] += int(matrix[pos, 1 - pos])
        entry["tn"] += int(matrix[1 - pos, 1 - pos])
        entry["fp"] += int(matrix[1 - pos, pos])
        entry["splits"].append(report.split)
        entry["roc_auc_per_source"][source] = report.binary.roc_auc
        entry["threshold"] = report.binary.threshold
    figures = {}
    for domain, e in out.items():
        n_malignant, n_benign = e["tp"] + e["fn"], e["tn"] + e["fp"]
        aucs = e["roc_auc_per_source"]
        figures[domain] = {
            "sensitivity": round(e["tp"] / n_malignant, 4) if n_malignant else None,
            "specificity": round(e["tn"] / n_benign, 4) if n_benign else None,
            "roc_auc": round(next(iter(aucs.values())), 4) if len(aucs) == 1 and None not in aucs.values() else None,
            "roc_auc_per_source": {s: None if v is None else round(v, 4) for s, v in aucs.items()},
            "threshold": e["threshold"],
            "n_malignant": n_malignant,
            "n_benign": n_benign,
            "split": " + ".join(e["splits"]),
        }
    return figures


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
    packs: Sequence[ModelPack], samples: Sequence[Sample], *, batch_size: int = DEFAULT_BATCH_SIZE,
    perturb: Perturbation | None = None,
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
    for batch in preprocessed_batches(samples, pre, batch_size=batch_size, perturb=perturb):
        runs: dict[object, tuple[dict[str, np.ndarray], float]] = {}  # the heads of one package: one run
        for i, pack in enumerate(packs):
            if pack.graph not in runs:
                start = time.perf_counter()
                runs[pack.graph] = pack.graph_outputs(batch), time.perf_counter() - start
            graph_outputs, spent = runs[pack.graph]
            outputs[i].append(pack.calibrated(pack.own_outputs(graph_outputs)[OUTPUT_NAME]))
            seconds[i] += spent
    return [np.concatenate(chunks) for chunks in outputs], seconds


def preprocessed_batches(
    samples: Sequence[Sample], pre: PreprocessConfig, *, batch_size: int = DEFAULT_BATCH_SIZE,
    perturb: Perturbation | None = None,
) -> Iterator[np.ndarray]:
    """float32 batches [B, 3, H, W] of `samples` through `imaging.load_image` (then `perturb`, when given) and
    `imaging.preprocess`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # The same JPEG draft size the app's Predictor uses, so evaluation decodes exactly as serving does.
    draft_size = pre.resize_shorter_side
    for start in range(0, len(samples), batch_size):
        arrays = []
        for sample in samples[start:start + batch_size]:
            try:
                image = load_image(sample.path, draft_size=draft_size)
            except ImageError as exc:
                raise ImageError(f"{sample.path}: {exc}") from None
            if perturb is not None:
                image = perturb(image, sample.image_id, pre.resize_shorter_side)
            arrays.append(preprocess(image, pre))
        yield np.stack(arrays)


def record_evaluation(package_dir: Path | str, evaluation: Evaluation) -> PackageConfig:
    """Make `evaluation` the package's official one.

    Replaces `<package>/eval/` with it, sets the config's `metrics` to its per-source headline numbers
    (config.json and the copy embedded in model.onnx, via package_files.write_package_config), checks the package
    still loads, and regenerates the model card. Returns the new config.
    """
    package_dir = Path(package_dir)
    old = ModelPack.load(package_dir, threads=1).config
    replace_evaluation(package_dir / EVAL_DIR, evaluation)
    write_package_config(package_dir, dataclasses.replace(old, metrics=recorded_metrics(evaluation)))
    config = ModelPack.load(package_dir, threads=1).config  # proves config.json and the embedded copy still agree
    write_model_card(package_dir, config, evaluation)
    return config


def record_heads_evaluation(package_dir: Path | str, evaluations: Mapping[str, Evaluation]) -> list[PackageConfig]:
    """`record_evaluation` for a package with a head per task: each evaluated head's report in eval/<task>/ and its
    metrics in its config (config.json and the embedded copy), and the card made again from the heads' cards as
    card.py renders them (combine.combined_card). Returns the heads' new configs."""
    package_dir = Path(package_dir)
    heads = []
    for task, pack in load_package(package_dir, threads=1).items():
        if task in evaluations:
            replace_evaluation(package_dir / EVAL_DIR / task, evaluations[task])
            heads.append(dataclasses.replace(pack.config, metrics=recorded_metrics(evaluations[task])))
        else:
            heads.append(pack.config)
    write_package_config(package_dir, heads_config_json(heads))
    heads = [pack.config for pack in load_package(package_dir, threads=1).values()]  # the two copies still agree
    cards = [render_model_card(config, evaluations.get(config.task)) for config in heads]
    (package_dir / README_FILE).write_text(combined_card(heads, cards, package_dir.resolve().name))
    return heads


def replace_evaluation(folder: Path, evaluation: Evaluation) -> None:
    """Write `evaluation` to `folder` in place of an older one (whose plots must not linger next to the new
    numbers)."""
    if folder.is_dir():
        for stale in (p for p in folder.iterdir() if p.is_file()):
            stale.unlink()
    write_evaluation(evaluation, folder, title=f"Evaluation: {evaluation.task} package")


def split_name(split_path: Path, subset: str) -> str:
    """How a report names its data: the split file relative to the repository (or as given) plus the subset."""
    path = Path(split_path)
    for base in (REPO_ROOT, Path.cwd()):
        try:
            return f"{path.resolve().relative_to(base.resolve()).as_posix()}:{subset}"
        except ValueError:
            continue
    return f"{path.as_posix()}:{subset}"


def _display_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
