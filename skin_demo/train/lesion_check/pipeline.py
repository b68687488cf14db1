"""Fit the lesion-check package: features -> regression -> threshold on validation -> package -> test numbers
through the serving path, recorded in config.json and the card."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from skin_demo.config import PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, session_options
from skin_demo.postprocess import LESION_LABEL
from skin_demo.train.export import max_logit_difference, max_probability_change, to_onnx, with_float16_weights
from skin_demo.train.lesion_check.card import render_card
from skin_demo.train.lesion_check.data import (
    NUISANCE_SUFFIX,
    POSITIVE_TEST_SOURCES,
    Item,
    read_positives,
    split_not_lesion,
    write_flat_images,
    write_not_lesion_split,
)
from skin_demo.train.lesion_check.features import LesionCheckNet, PooledFeatures, cached_features, extract_features
from skin_demo.train.lesion_check.head import MIN_VAL_PASS_RATE, choose_head, linear_head
from skin_demo.train.lesion_check.measure import TARGETS, measure_cost_ms, pooled_rejection, rates, serve_scores
from skin_demo.train.metrics import compute_report
from skin_demo.train.model import MultiTaskNet, preprocess_config
from skin_demo.train.package_files import write_package
from skin_demo.train.report import write_report
from skin_demo.train.run_info import git_commit, jsonable

log = logging.getLogger("skin_demo.train")

TASK = "lesion_check"
LABELS = (LESION_LABEL, "not_lesion")


def fit(args: argparse.Namespace) -> PackageConfig:
    """Features -> regression -> threshold on validation -> package -> test numbers through the serving path."""
    started = time.perf_counter()
    torch.set_num_threads(args.threads)  # the export and the parity check; features run in ONNX Runtime
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(jsonable(vars(args)), indent=2) + "\n")

    negatives = split_not_lesion(args.not_lesion, seed=args.seed)
    write_not_lesion_split(args.not_lesion_split, negatives)
    items = negatives + read_positives(args.ham, args.ham_split, args.isic, args.mvb)
    fit_pos, fit_neg, val_pos, val_neg = (
        [i for i in items if i.subset == subset and i.lesion == lesion]
        for subset, lesion in (("fit", True), ("fit", False), ("val", True), ("val", False))
    )

    pre = preprocess_config(args.arch, args.image_size, crop_pct=1.0)
    backbone = MultiTaskNet(args.arch, {}, pretrained=not args.no_pretrained).backbone.eval().requires_grad_(False)
    features = PooledFeatures(backbone, tuple(args.taps)).eval()
    config = PackageConfig(task=TASK, labels=LABELS, malignant_labels=(), preprocess=pre, architecture=args.arch)
    session = ort.InferenceSession(to_onnx(features, config).SerializeToString(), session_options(args.threads),
                                   providers=["CPUExecutionProvider"])
    key = {"arch": args.arch, "pretrained": not args.no_pretrained, "taps": sorted(args.taps)}

    extraction_seconds: list[float | None] = []

    def feats(name: str, chosen: list[Item], copies: int) -> np.ndarray:
        features, seconds = cached_features(
            out / "features", name, session, chosen, pre, copies=copies, seed=args.seed, key=key)
        extraction_seconds.append(seconds)
        return features

    flat = write_flat_images(out / "generated", args.seed, args.flat_images)
    fit_flat = [i for i in flat if i.subset == "fit"]
    x_fit = np.concatenate([feats("fit_lesion", fit_pos, args.positive_copies),
                            feats("fit_not_lesion", fit_neg, args.negative_copies),
                            # Not cached: regenerated every run (2 s), and a cache keyed by path would miss a change.
                            extract_features(session, fit_flat, pre, copies=0, seed=args.seed)])
    y_fit = np.r_[np.ones(len(fit_pos) * (1 + args.positive_copies)),
                  np.zeros(len(fit_neg) * (1 + args.negative_copies) + len(fit_flat))]
    x_val_pos, x_val_neg = feats("val_lesion", val_pos, 0), feats("val_not_lesion", val_neg, 0)
    # None: extracted by a run that kept no timing; the provenance then leaves the figure out.
    feature_minutes = None if None in extraction_seconds else round(sum(extraction_seconds) / 60, 1)

    head, val = choose_head(x_fit, y_fit, x_val_pos, val_pos, x_val_neg)
    log.info("chose l2 %g: threshold %.4f, val rejection %.4f", head["l2"], head["threshold"], head["val_rejection"])

    config = PackageConfig(**{**config.__dict__, "decision_threshold": head["threshold"]})
    net = LesionCheckNet(features, linear_head(head["weights"], head["bias"])).eval()
    proto = to_onnx(net, config)
    parity_batch = np.stack([preprocess(load_image(i.path), pre) for i in (val_pos[:16] + val_neg[:16])])
    parity = max_logit_difference(net, proto, parity_batch)
    if parity > 1e-3:
        raise RuntimeError(f"lesion check: ONNX Runtime differs from torch by {parity:.2e} in a logit (limit 1e-3)")
    # float16 storage halves what the on-device page downloads; the test numbers below measure this file.
    compact = with_float16_weights(proto)
    float16_change = max_probability_change(proto, compact, parity_batch, config.temperature)
    proto = compact

    # The test numbers come from the exported file loaded as the app loads it, so it is written first to the
    # run folder; the package itself is written once, with those numbers in its config and card.
    unevaluated = write_package(out / "unevaluated", proto, config, card="")
    pack = ModelPack.load(unevaluated, threads=args.threads)
    tested = [i for i in items if i.subset in ("test", "check")]
    scores = serve_scores(pack, tested)
    per_group = rates(tested, scores, config)
    # Robustness: every test image once more, through one nuisance the fit never drew (its own seed); the
    # non-lesion photos pooled, since a vignette or a colour cast must not make a cat pass either.
    disguised = [dataclasses.replace(i, group=f"{i.group if i.lesion else 'not_lesion'}{NUISANCE_SUFFIX}")
                 for i in tested if i.subset == "test"]
    robustness = rates(disguised, serve_scores(pack, disguised, nuisance_seed=args.seed + 1_000_003), config)
    flat_test = [i for i in flat if i.subset == "test"]
    robustness |= rates(flat_test, serve_scores(pack, flat_test), config)
    is_test = np.array([i.subset == "test" for i in tested])
    report = compute_report(
        np.array([0 if i.lesion else 1 for i in tested])[is_test],
        np.stack([scores, 1 - scores], axis=1)[is_test], LABELS, task=TASK, positive_label=LESION_LABEL,
        threshold=config.decision_threshold, split=_split_name(args),
    )
    test_items = [i for i in tested if i.subset == "test"]
    timed = test_items[:: max(1, len(test_items) // max(1, args.cost_images))][: args.cost_images]
    cost = measure_cost_ms(unevaluated, timed)
    minutes = round((time.perf_counter() - started) / 60, 1)

    metrics = _metrics(report, per_group, robustness, val, cost)
    counts = {"lesion": len(fit_pos), "not_lesion": len(fit_neg), "flat_generated": len(fit_flat)}
    provenance = {**_provenance(args, head, x_fit.shape[1], counts, parity, minutes, feature_minutes),
                  "weights": "float16 storage, float32 compute",
                  "float16_max_probability_change": float(f"{float16_change:.3g}")}
    config = PackageConfig(**{**config.__dict__, "metrics": metrics, "provenance": provenance})
    package = write_package(Path(args.package), proto, config, render_card(config))
    # eval/ holds this evaluation only: files an older report wrote must not sit beside the new numbers.
    shutil.rmtree(package / "eval", ignore_errors=True)
    write_report(report, package / "eval", title="Evaluation: lesion check")
    log.info("lesion check package -> %s (%.1f min)", package, minutes)
    return config


def _metrics(report, per_group: dict[str, dict], robustness: dict[str, dict], val: dict, cost: dict) -> dict:
    """config.json `metrics`: the EvalReport headline, flat rates for the app's model list, and the tables."""
    return {
        **report.headline(),
        **_headline_rates(per_group),
        "cost_ms_per_image": cost["model"],
        "per_source": {g: r for g, r in per_group.items() if "pass_rate" in r},
        "per_category": {g: r for g, r in per_group.items() if "rejection_rate" in r},
        "robustness": robustness,
        "validation": val,
        "cost_ms": cost,
        "targets": {"rejection_rate": TARGETS["rejection"], "pass_rate": TARGETS["pass"]},
    }


def _provenance(args, head: dict, n_features: int, fit_counts: dict[str, int], parity: float, minutes: float,
                feature_minutes: float | None) -> dict:
    """config.json `provenance`: what data, code, machine and settings made the package, and how long it took."""
    return {
        "data": "lesion: HAM10000 (200x150 copy) train split + ISIC 2017 train split, augmented; not_lesion: "
                "../not_lesion fit split, augmented",
        "split": f"{args.ham_split} (HAM10000), isic2017_split (ISIC 2017), {args.not_lesion_split} (not_lesion)",
        "code_commit": git_commit(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": f"cpu ({platform.processor() or platform.machine()}, {args.threads} "
                    f"thread{'s' if args.threads != 1 else ''}, shared with other jobs)",
        "train_minutes": minutes,
        "feature_extraction_minutes": feature_minutes,
        "method": f"Frozen {'ImageNet' if not args.no_pretrained else 'random'} {args.arch}, cut after stage "
                  f"{max(args.taps)}: globally pooled outputs of stages {sorted(args.taps)} ({n_features} features) -> "
                  f"class-balanced L2 logistic regression (l2 {head['l2']:g}), exported as one linear layer",
        "fit_images": {**fit_counts,
                       "augmented_copies": {"lesion": args.positive_copies, "not_lesion": args.negative_copies}},
        "threshold_rule": f"The threshold is the highest one that passes >= {MIN_VAL_PASS_RATE:.0%} of each "
                          "positive source's validation images (HAM10000 val, ISIC 2017 val)",
        "onnx_parity_max_abs_logit_diff": float(f"{parity:.3g}"),
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
    return f"{args.ham_split}:test + isic2017:test + {args.not_lesion_split}:test"
