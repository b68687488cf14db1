"""Test numbers from the exported package through the serving path: the check's probabilities per image, pass or
rejection rates and the domain found per group, and the cost per image."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from skin_demo.config import PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import image_domain, lesion_check
from skin_demo.train.lesion_check.augment import nuisance
from skin_demo.train.lesion_check.data import Item
from skin_demo.train.metrics import wilson_interval

# Issue 15's targets: dermoscopy test sources pass >= 98 %, clinical test photos >= 95 % and >= 90 % of those
# passed are called clinical; >= 95 % of non-lesion photos rejected, rashes >= 90 %.
TARGETS = {"rejection": 0.95, "pass": 0.98, "pass_clinical": 0.95, "domain_clinical": 0.90, "rejection_rash": 0.90}
RASH_CATEGORY = "rash or other skin disease"


def serve_probabilities(pack: ModelPack, items: list[Item], *, nuisance_seed: int | None = None,
                        batch_size: int = 64) -> np.ndarray:
    """The check's probabilities [N, K] for each item exactly as the app computes them (load_image -> preprocess
    -> ONNX Runtime).

    With `nuisance_seed`, each image first goes through one seeded `nuisance` (the robustness check: the same
    test images as another camera or clinic might deliver them)."""
    chunks = []
    for start in range(0, len(items), batch_size):
        images = [load_image(i.path) for i in items[start:start + batch_size]]
        if nuisance_seed is not None:
            images = [nuisance(im, np.random.default_rng([nuisance_seed, start + k])) for k, im in enumerate(images)]
        batch = np.stack([preprocess(image, pack.config.preprocess) for image in images])
        chunks.append(pack.probabilities(batch))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(pack.config.labels)), np.float32)


def served_calls(probabilities: np.ndarray, config: PackageConfig) -> list[tuple[bool, str]]:
    """(passed, domain) per row, made by `postprocess.lesion_check` and `postprocess.image_domain`."""
    calls = []
    for row in probabilities.tolist():
        by_label = dict(zip(config.labels, row))
        calls.append((lesion_check(by_label, config).passed, image_domain(by_label, config).label))
    return calls


def rates(items: list[Item], probabilities: np.ndarray, config: PackageConfig) -> dict[str, dict]:
    """Per group: n, how many passed the check, and the pass or rejection rate (lesion groups: pass rate;
    not_lesion categories: rejection rate) with its 95 % Wilson interval; for lesion groups also how many of the
    passed were given their own domain (`domain_rate`)."""
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    lesion_of: dict[str, bool] = {}
    for item, (passed, domain) in zip(items, served_calls(probabilities, config), strict=True):
        groups[item.group].append((passed, domain == item.label))
        lesion_of[item.group] = item.lesion
    out = {}
    for group in sorted(groups):
        passed = [p for p, _ in groups[group]]
        good = sum(passed) if lesion_of[group] else len(passed) - sum(passed)
        low, high = wilson_interval(good, len(passed))
        rate_name = "pass_rate" if lesion_of[group] else "rejection_rate"
        out[group] = {"n": len(passed), "passed": int(sum(passed)), rate_name: round(good / len(passed), 4),
                      "ci95": [round(low, 4), round(high, 4)]}
        if lesion_of[group] and sum(passed):
            right = sum(p and d for p, d in groups[group])
            out[group] |= {"own_domain": right, "domain_rate": round(right / sum(passed), 4)}
    return out


def pooled_rejection(per_group: dict[str, dict]) -> float:
    """The rejection rate of all not_lesion groups together: each image counts once, whatever its category."""
    rejected = sum(g["n"] - g["passed"] for g in per_group.values())
    return round(rejected / sum(g["n"] for g in per_group.values()), 4)


def measure_cost_ms(pack_dir: Path, items: list[Item], threads: int = 1, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per image, one image at a time: decoding, preprocessing and the ONNX model on `threads`
    ONNX Runtime threads. Medians, plus the model's 10th percentile (`model_p10`): the CPU is usually shared, and
    the fast end is what an idle core gives. The 1-minute load average says how busy the machine was."""
    pack = ModelPack.load(pack_dir, threads=threads)
    timings = defaultdict(list)
    for _ in range(repeats):
        for item in items:
            t0 = time.perf_counter()
            image = load_image(item.path)
            t1 = time.perf_counter()
            x = preprocess(image, pack.config.preprocess)[None]
            t2 = time.perf_counter()
            pack.probabilities(x)
            t3 = time.perf_counter()
            timings["decode"].append(t1 - t0)
            timings["preprocess"].append(t2 - t1)
            timings["model"].append(t3 - t2)
    cost = {name: round(float(np.median(values)) * 1e3, 2) for name, values in timings.items()}
    cost["model_p10"] = round(float(np.percentile(timings["model"], 10)) * 1e3, 2)
    return cost | {"threads": threads, "load_average_1min": round(os.getloadavg()[0], 1)}
