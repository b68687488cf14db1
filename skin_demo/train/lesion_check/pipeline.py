"""Fit the lesion-check package: features -> three-way regression (dermoscopy / clinical / not_lesion) -> threshold
on validation -> package -> test numbers through the serving path, recorded in config.json and the card."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from skin_demo.config import MODEL_FILE, PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, session_options
from skin_demo.postprocess import CLINICAL, DERMOSCOPY, DOMAIN_LABELS, NOT_LESION
from skin_demo.train.export import to_onnx
from skin_demo.train.lesion_check.card import render_card
from skin_demo.train.lesion_check.data import (
    ALL_CLINICAL,
    NUISANCE_SUFFIX,
    POSITIVE_TEST_SOURCES,
    Item,
    read_positives,
    split_not_lesion,
    write_flat_images,
    write_not_lesion_split,
)
from skin_demo.train.lesion_check.features import LesionCheckNet, PooledFeatures, cached_features, extract_features
from skin_demo.train.lesion_check.head import HIDDEN_UNITS, Head, choose_head, torch_head
from skin_demo.train.lesion_check.loso import leave_one_source_out
from skin_demo.train.lesion_check.measure import (
    TARGETS,
    measure_cost_ms,
    pooled_rejection,
    rates,
    serve_probabilities,
    served_calls,
)
from skin_demo.train.metrics import compute_report
from skin_demo.train.model import MultiTaskNet, preprocess_config
from skin_demo.train.package_build import build_package
from skin_demo.train.package_files import write_package
from skin_demo.train.report import write_report
from skin_demo.train.results import EvalReport
from skin_demo.train.run_info import git_commit, jsonable

log = logging.getLogger("skin_demo.train")

TASK = "lesion_check"


def fit(args: argparse.Namespace) -> PackageConfig:
    """Features -> regression -> threshold on validation -> package -> test numbers through the serving path."""
    started = time.perf_counter()
    torch.set_num_threads(args.threads)  # the export and the parity check; features run in ONNX Runtime
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(jsonable(vars(args)), indent=2) + "\n")

    negatives = split_not_lesion(args.not_lesion, seed=args.seed)
    write_not_lesion_split(args.not_lesion_split, negatives)
    items = negatives + read_positives(args.ham, args.ham_split, args.isic, args.mvb, args.clinical)
    copies = {DERMOSCOPY: args.positive_copies, CLINICAL: args.clinical_copies, NOT_LESION: args.negative_copies}

    backbone = MultiTaskNet(args.arch, {}, pretrained=not args.no_pretrained).backbone.eval().requires_grad_(False)
    pre = preprocess_config(backbone, args.image_size, crop_pct=1.0)
    features = PooledFeatures(backbone, tuple(args.taps)).eval()
    config = PackageConfig(task=TASK, labels=DOMAIN_LABELS, malignant_labels=(), preprocess=pre,
                           architecture=args.arch)
    session = ort.InferenceSession(to_onnx(features, config).SerializeToString(), session_options(args.threads),
                                   providers=["CPUExecutionProvider"])
    key = {"arch": args.arch, "pretrained": not args.no_pretrained, "taps": sorted(args.taps)}
    extraction_seconds: list[float | None] = []

    def feats(subset: str, label: str, n_copies: int = 0) -> tuple[list[Item], np.ndarray]:
        chosen = [i for i in items if i.subset == subset and i.label == label]
        x, seconds = cached_features(out / "features", f"{subset}_{label}", session, chosen, pre, copies=n_copies,
                                     seed=args.seed, key=key)
        extraction_seconds.append(seconds)
        return chosen, x

    flat = write_flat_images(out / "generated", args.seed, args.flat_images)
    fit_flat = [i for i in flat if i.subset == "fit"]
    fitted = {label: feats("fit", label, copies[label]) for label in DOMAIN_LABELS}
    fitted_items = [i for label in DOMAIN_LABELS for i in fitted[label][0] for _ in range(1 + copies[label])]
    # The flat pictures are not cached: regenerated every run (2 s), and a cache keyed by path would miss a change.
    x_fit = np.concatenate([fitted[label][1] for label in DOMAIN_LABELS]
                           + [extract_features(session, fit_flat, pre, copies=0, seed=args.seed)])
    y_fit = np.array([DOMAIN_LABELS.index(i.label) for i in fitted_items + fit_flat])
    val_pos = [pair for label in (DERMOSCOPY, CLINICAL) for pair in [feats("val", label)]]
    val_items = val_pos[0][0] + val_pos[1][0]
    x_val_pos = np.concatenate([val_pos[0][1], val_pos[1][1]])
    _, x_val_neg = feats("val", NOT_LESION)
    tested_pos = [pair for label in (DERMOSCOPY, CLINICAL) for pair in [feats("test", label)]]
    # None: extracted by a run that kept no timing; the provenance then leaves the figure out.
    feature_minutes = None if None in extraction_seconds else round(sum(extraction_seconds) / 60, 1)

    min_pass = {DERMOSCOPY: args.min_val_pass[0], CLINICAL: args.min_val_pass[1]}
    head = choose_head(x_fit, y_fit, x_val_pos, val_items, x_val_neg, min_pass)
    log.info("chose alpha %g: threshold %.4f, val rejection %.4f, domain accuracy %.4f", head.alpha,
             head.threshold, head.val_rejection, head.val_domain_accuracy)
    loso = leave_one_source_out(
        head, x_fit, y_fit, [i.group for i in fitted_items + fit_flat], x_val_pos, val_items, x_val_neg,
        test_items=tested_pos[0][0] + tested_pos[1][0], x_test=np.concatenate([tested_pos[0][1], tested_pos[1][1]]),
        min_pass=min_pass)

    config = dataclasses.replace(config, decision_threshold=head.threshold)
    net = LesionCheckNet(features, torch_head(head.layers)).eval()
    parity_items = val_items[:8] + val_items[-8:] + [i for i in items if i.subset == "val" and not i.lesion][:16]
    proto, config = build_package(net, config, np.stack([preprocess(load_image(i.path), pre) for i in parity_items]),
                                  attention=False)  # its head is an MLP over several stages' pooled features

    # The test numbers come from the exported file loaded as the app loads it, so it is written first to the
    # run folder; the package itself is written once, with those numbers in its config and card.
    unevaluated = write_package(out / "unevaluated", proto, config, card="")
    tested = measure_test(unevaluated, items, [i for i in flat if i.subset == "test"], seed=args.seed,
                          cost_images=args.cost_images, split=_split_name(args), threads=args.threads)
    minutes = round((time.perf_counter() - started) / 60, 1)

    val = {"pass_rate": head.val_pass, "rejection_rate": head.val_rejection,
           "domain_accuracy": head.val_domain_accuracy, "alpha": head.alpha}
    metrics = _metrics(tested, val, loso)
    counts = {label: len(fitted[label][0]) for label in DOMAIN_LABELS} | {"flat_generated": len(fit_flat)}
    provenance = {**config.provenance,
                  **_provenance(args, head, x_fit.shape[1], counts, copies, min_pass, minutes, feature_minutes)}
    config = dataclasses.replace(config, metrics=metrics, provenance=provenance)
    package = _write_measured(Path(args.package), proto, config, tested.report)
    log.info("lesion check package -> %s (%.1f min)", package, minutes)
    return config


def measure(args: argparse.Namespace) -> PackageConfig:
    """Measure the test figures of the finished lesion check `args.measure` again, through the serving path, on the
    test items its own fit measured (the seeded not_lesion split and generated flat pictures of its recorded
    seed): for a package whose file changed after fitting, e.g. its int8 copy written by `compact`. The validation
    and leave-one-source-out figures (measured on the fit's features) are kept, and so is the provenance (with
    `compact`'s per-source validation change)."""
    package = Path(args.measure)
    config = ModelPack.load(package, threads=args.threads).config
    recorded = config.provenance.get("args", {})
    seed = recorded.get("seed", args.seed)
    items = split_not_lesion(args.not_lesion, seed=seed) + read_positives(args.ham, args.ham_split, args.isic,
                                                                           args.mvb, args.clinical)
    with tempfile.TemporaryDirectory(prefix="skin_demo_flat_") as tmp:
        flat = write_flat_images(Path(tmp), seed, recorded.get("flat_images", args.flat_images))
        tested = measure_test(package, items, [i for i in flat if i.subset == "test"], seed=seed,
                              cost_images=recorded.get("cost_images", args.cost_images), split=_split_name(args),
                              threads=args.threads)
    old = config.metrics
    config = dataclasses.replace(config, metrics=_metrics(tested, old["validation"], old["leave_one_source_out"]))
    _write_measured(package, onnx.load(str(package / MODEL_FILE)), config, tested.report)
    return config


@dataclass(frozen=True)
class TestFigures:
    """What `measure_test` measured: the report over all test items, pass / rejection rates per source or
    category, the same for disguised images and flat pictures, and the inference cost."""

    report: EvalReport
    per_group: dict[str, dict]
    robustness: dict[str, dict]
    cost: dict[str, float]


def measure_test(package_dir: Path, items: list[Item], flat_test: list[Item], *, seed: int, cost_images: int,
                 split: str, threads: int) -> TestFigures:
    """The test figures of the package in `package_dir`, loaded as the app loads it, on the test and check
    subsets of `items` and the generated flat pictures `flat_test`."""
    pack = ModelPack.load(package_dir, threads=threads)
    config = pack.config
    tested = [i for i in items if i.subset in ("test", "check")]
    probs = serve_probabilities(pack, tested)
    per_group = rates(tested, probs, config)
    # The clinical targets are on all clinical test photos together; each atlas is reported on its own as well.
    clinical_rows = [k for k, i in enumerate(tested) if i.label == CLINICAL and i.subset == "test"]
    per_group |= rates([dataclasses.replace(tested[k], group=ALL_CLINICAL) for k in clinical_rows],
                       probs[clinical_rows], config)
    # Robustness: every test image once more, through one nuisance the fit never drew (its own seed); the
    # non-lesion photos pooled, since a vignette or a colour cast must not make a cat pass either.
    disguised = [dataclasses.replace(i, group=f"{i.group if i.lesion else 'not_lesion'}{NUISANCE_SUFFIX}")
                 for i in tested if i.subset == "test"]
    robustness = rates(disguised, serve_probabilities(pack, disguised, nuisance_seed=seed + 1_000_003), config)
    robustness |= rates(flat_test, serve_probabilities(pack, flat_test), config)
    is_test = np.array([i.subset == "test" for i in tested])
    calls = served_calls(probs[is_test], config)
    report = compute_report(
        np.array([DOMAIN_LABELS.index(i.label) for i in tested if i.subset == "test"]), probs[is_test],
        DOMAIN_LABELS, task=TASK, split=split,
        predicted=np.array([DOMAIN_LABELS.index(domain) for _, domain in calls]),
    )
    test_items = [i for i in tested if i.subset == "test"]
    timed = test_items[:: max(1, len(test_items) // max(1, cost_images))][:cost_images]
    return TestFigures(report, per_group, robustness, measure_cost_ms(package_dir, timed))


def _write_measured(package_dir: Path, proto: onnx.ModelProto, config: PackageConfig, report: EvalReport) -> Path:
    """Write the package with its measured config and card, and its eval/ report."""
    package = write_package(package_dir, proto, config, render_card(config))
    # eval/ holds this evaluation only: files an older report wrote must not sit beside the new numbers.
    shutil.rmtree(package / "eval", ignore_errors=True)
    write_report(report, package / "eval", title="Evaluation: lesion check")
    return package


def _metrics(tested: TestFigures, val: dict, loso: dict) -> dict:
    """config.json `metrics`: the EvalReport headline, flat rates for the app's model list, and the tables."""
    return {
        **tested.report.headline(),
        **_headline_rates(tested.per_group),
        "cost_ms_per_image": tested.cost["model"],
        "per_source": {g: r for g, r in tested.per_group.items() if "pass_rate" in r},
        "per_category": {g: r for g, r in tested.per_group.items() if "rejection_rate" in r},
        "robustness": tested.robustness,
        "leave_one_source_out": loso,
        "validation": val,
        "cost_ms": tested.cost,
        "targets": TARGETS,
    }


def _provenance(args, head: Head, n_features: int, fit_counts: dict[str, int], copies: dict[str, int],
                min_pass: dict[str, float], minutes: float, feature_minutes: float | None) -> dict:
    """config.json `provenance`: what data, code, machine and settings made the package, and how long it took."""
    return {
        "data": "dermoscopy: HAM10000 (200x150 copy) train split + ISIC 2017 train split; clinical: clinical photos "
                "(DermNet NZ + SD-198) train split; not_lesion: ../not_lesion fit split; all augmented",
        "split": f"{args.ham_split} (HAM10000), isic2017_split (ISIC 2017), clinical labels.csv split, "
                 f"{args.not_lesion_split} (not_lesion)",
        "code_commit": git_commit(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": f"cpu ({platform.processor() or platform.machine()}, {args.threads} "
                    f"thread{'s' if args.threads != 1 else ''}, shared with other jobs)",
        "train_minutes": minutes,
        "feature_extraction_minutes": feature_minutes,
        "method": f"Frozen {'ImageNet' if not args.no_pretrained else 'random'} {args.arch}, cut after stage "
                  f"{max(args.taps)}: globally pooled outputs of stages {sorted(args.taps)} ({n_features} features) -> "
                  f"scikit-learn class-balanced MLP (one hidden layer of {HIDDEN_UNITS} ReLU units, L2 alpha "
                  f"{head.alpha:g}) over {list(DOMAIN_LABELS)}, exported as two linear layers",
        "fit_images": {**fit_counts, "augmented_copies": copies},
        "threshold_rule": {"min_val_pass_rate": min_pass,
                           "text": "P(dermoscopy) + P(clinical) >= threshold passes; the threshold is the highest "
                                   f"that passes >= {min_pass[DERMOSCOPY]:.0%} of each dermoscopy source's and >= "
                                   f"{min_pass[CLINICAL]:.0%} of each clinical atlas's validation images"},
        "args": jsonable(vars(args)),
    }


def _headline_rates(per_group: dict[str, dict]) -> dict[str, float]:
    """The flat numbers the app's model list shows: pooled rejection and each positive source's pass rate."""
    out = {"rejection_rate": pooled_rejection({g: r for g, r in per_group.items() if "rejection_rate" in r})}
    for group in (*POSITIVE_TEST_SOURCES, "mvb_non_ham"):
        if group in per_group:
            out[f"pass_rate_{group}"] = per_group[group]["pass_rate"]
    return out


def _split_name(args) -> str:
    return f"{args.ham_split}:test + isic2017:test + clinical:test + {args.not_lesion_split}:test"
