"""`python -m skin_demo.train lesion-check`: fit the "is this a skin-lesion close-up?" package (models/lesion_check).

A frozen ImageNet EfficientNet-Lite0, cut after stage 5, turns each image into the pooled outputs of its stages
3-5, and a logistic regression on those features tells dermoscopy close-ups (HAM10000 and ISIC 2017: `lesion`) from
what else a visitor may upload (../not_lesion: everyday photos, rashes, healthy skin, hands and faces, documents;
plus generated flat pictures: `not_lesion`). Network and regression (its coefficients copied into a linear layer)
are exported as one ONNX graph, so serving runs the check like any other package and calls it with
`postprocess.lesion_check`. Features are extracted once with ONNX Runtime and cached under `--out`.

Both classes get the same nuisances (colour casts, black vignettes and frames, squashed aspect, low resolution and
JPEG, rotations): dermoscopy from another clinic looks like that, and a nuisance seen on one class only would
become a cue. The decision threshold is the highest P(lesion) that still passes 99 % of each positive source's
validation images. Test numbers come from the exported file through the serving path (`load_image`, `preprocess`,
`ModelPack`, `lesion_check`), per source and per not_lesion category.

    python -m skin_demo.train lesion-check --ham ../shared/data/ham10000 --isic ../shared/data/isic2017 \\
        --not-lesion ../shared/data/not_lesion --mvb ../shared/data/malignant_vs_benign \\
        --out runs/lesion_check --package models/lesion_check
    python -m skin_demo.train lesion-check --show models/lesion_check   # print the recorded table
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import platform
import random
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from huggingface_hub import ModelCardData
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from skin_demo.config import INPUT_NAME, PackageConfig, PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, session_options
from skin_demo.postprocess import LESION_LABEL, lesion_check
from skin_demo.train.card import LICENSE, NOT_A_DIAGNOSIS
from skin_demo.train.data import read_ham10000, read_split
from skin_demo.train.export import max_logit_difference, max_probability_change, to_onnx, with_float16_weights
from skin_demo.train.metrics import choose_threshold, compute_report, wilson_interval
from skin_demo.train.model import DEFAULT_ARCHITECTURE, MultiTaskNet, preprocess_config
from skin_demo.train.package_files import write_package
from skin_demo.train.run_info import git_commit, jsonable
from skin_demo.train.report import write_report

log = logging.getLogger("skin_demo.train")

TASK = "lesion_check"
LABELS = (LESION_LABEL, "not_lesion")
NOT_LESION_FRACTIONS = (0.6, 0.2, 0.2)  # fit / val / test, per category
MIN_VAL_PASS_RATE = 0.99  # every positive source passes at least this share of its validation images
L2_GRID = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # logistic-regression penalties tried; validation picks one
CACHE_VERSION = 2  # bump when `nuisance` or `PooledFeatures` changes, so stale cached features are not reused
TARGETS = {"rejection": 0.95, "pass": 0.98}
POSITIVE_TEST_SOURCES = ("ham10000", "isic2017")
FLAT_GROUP = "flat or blank picture (generated)"
NUISANCE_SUFFIX = "+nuisance"  # group name of the robustness check: test images through one random nuisance


@dataclass(frozen=True)
class Item:
    """One image of the lesion-check data: where it is, which source or category, which subset, its class."""

    path: Path
    name: str  # file name or image id, as in the split CSVs
    group: str  # "ham10000", "isic2017", "mvb_non_ham" or a not_lesion category
    subset: str  # "fit", "val", "test" (or "check" for the source never fitted on)
    lesion: bool


# ---------------------------------------------------------------------------------------------------- data


def split_not_lesion(root: Path, seed: int = 0) -> list[Item]:
    """Every not_lesion image with a fit / val / test subset: NOT_LESION_FRACTIONS of each category, seeded."""
    root = Path(root)
    with (root / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_category: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row["file"])
    rng = random.Random(seed)
    items = []
    for category in sorted(by_category):
        files = sorted(by_category[category])
        rng.shuffle(files)
        n_fit = round(NOT_LESION_FRACTIONS[0] * len(files))
        n_val = round(NOT_LESION_FRACTIONS[1] * len(files))
        for i, name in enumerate(files):
            subset = "fit" if i < n_fit else "val" if i < n_fit + n_val else "test"
            items.append(Item(root / name, name, category, subset, lesion=False))
    return sorted(items, key=lambda item: item.name)


def write_not_lesion_split(path: Path, items: list[Item]) -> None:
    """file, category, split for every not_lesion image (names only, never an image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "category", "split"])
        for item in items:
            writer.writerow([item.name, item.group, item.subset])


def write_flat_images(folder: Path, seed: int, n_fit: int) -> list[Item]:
    """Generated featureless pictures (a plain colour, maybe a gradient and sensor noise) as not_lesion items.

    No category of ../not_lesion is featureless, and without these a plain white or pink picture passed the
    check (a lens cap, an overexposed shot, a blank page). They are written as PNGs under `folder` (the run
    folder) so they take the same path through decoding and preprocessing as every other image. `n_fit` for
    fitting, half as many for the test.
    """
    counts = {"fit": n_fit, "test": n_fit // 2}
    rng = np.random.default_rng([seed, 7])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for subset, n in counts.items():
        for k in range(n):
            width, height = (int(v) for v in rng.integers(64, 400, size=2))
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            if rng.random() < 0.2:  # white, black or grey
                colour = np.full(3, rng.choice([0.0, 128.0, 255.0]), np.float32)
            pixels = np.broadcast_to(colour, (height, width, 3)).astype(np.float32)
            if rng.random() < 0.5:
                ramp = np.linspace(rng.uniform(0.5, 1.0), 1.0, width if rng.random() < 0.5 else height)
                pixels = pixels * (ramp[None, :, None] if len(ramp) == width else ramp[:, None, None])
            if rng.random() < 0.6:  # sensor noise; the rest stay perfectly flat, like a generated blank image
                pixels = pixels + rng.normal(0, rng.uniform(1, 12), pixels.shape)
            path = folder / f"{subset}_{k:04d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path)
            items.append(Item(path, path.name, FLAT_GROUP, subset, lesion=False))
    return items


def read_positives(ham: Path, ham_split: Path, isic: Path, mvb: Path) -> list[Item]:
    """HAM10000 by its split CSV, ISIC 2017 by its challenge split, and the non-HAM10000 malignant-vs-benign images.

    The malignant-vs-benign images are only checked, never fitted on ("check"): a dermoscopy source the guard has
    not seen. Those that are copies of an ISIC 2017 training image are tagged `mvb_non_ham_seen`, so the unseen
    rest can be reported on its own.
    """
    split_of = read_split(ham_split)
    subset_name = {"train": "fit", "val": "val", "test": "test"}
    items = [
        Item(s.path, s.image_id, "ham10000", subset_name[split_of[s.image_id]], lesion=True)
        for s in read_ham10000(ham)
        if s.image_id in split_of
    ]
    seen_in_fit = set()
    with (Path(isic) / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            subset = subset_name[row["isic2017_split"]]
            path = Path(isic) / "images" / f"{row['image_id']}.jpg"
            items.append(Item(path, row["image_id"], "isic2017", subset, lesion=True))
            if subset == "fit" and row.get("fanconi_duplicate"):
                seen_in_fit.add(row["fanconi_duplicate"])
    with (Path(mvb) / "fanconi_to_ham10000_map.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["ham_lesion_id"]:
                continue
            name = f"{row['split']}/{row['label']}/{row['file']}"
            group = "mvb_non_ham_seen" if name in seen_in_fit else "mvb_non_ham"
            items.append(Item(Path(mvb) / name, name, group, "check", lesion=True))
    return items


# ---------------------------------------------------------------------------------------------------- augmentation


def nuisance(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random mix of what changes between cameras and clinics but not whether the picture shows a lesion."""
    if rng.random() < 0.3:  # squashed or stretched copies
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        image = image.resize((max(8, round(image.width * aspect)), image.height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:  # any rotation; the black corners look like a dermatoscope's field of view
        image = image.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, expand=rng.random() < 0.5)
    if rng.random() < 0.4:  # another framing: a zoomed-in part of the picture
        scale = math.sqrt(rng.uniform(0.5, 0.9))
        w, h = round(image.width * scale), round(image.height * scale)
        left, top = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
        image = image.crop((left, top, left + w, top + h))
    image = _colour_cast(image, rng)
    if rng.random() < 0.3:
        image = _vignette(image, rng)
    if rng.random() < 0.2:
        image = _frame(image, rng)
    if rng.random() < 0.3:  # low-resolution copies, upscaled again by whoever made them
        short = int(rng.integers(32, 100))
        factor = short / min(image.size)
        if factor < 1:
            small = image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))))
            image = small if rng.random() < 0.5 else small.resize(image.size, Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(15, 80)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def _colour_cast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.75, 1.25, size=3).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return image


def _vignette(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Black outside an ellipse (soft edge): the round field of view of a contact dermatoscope."""
    w, h = image.size
    radius = rng.uniform(0.45, 0.75)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / (radius * 1.4142)
    mask = np.clip((1.0 - distance) / 0.08 + 0.5, 0, 1)[..., None]
    return Image.fromarray((np.asarray(image, dtype=np.float32) * mask).astype(np.uint8), "RGB")


def _frame(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark border on some sides: letterboxing, a scanner's edge, a ruler strip."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    shade = tuple(int(v) for v in rng.integers(0, 40, size=3))
    for side in range(4):
        if rng.random() < 0.6:
            depth = rng.uniform(0.03, 0.15)
            box = [(0, 0, w, h * depth), (0, h * (1 - depth), w, h), (0, 0, w * depth, h), (w * (1 - depth), 0, w, h)]
            draw.rectangle(box[side], fill=shade)
    return image


# ---------------------------------------------------------------------------------------------------- features


class PooledFeatures(torch.nn.Module):
    """The globally pooled outputs of the EfficientNet stages in `taps`, side by side; the stages after the last
    tap (and the ImageNet head) are dropped.

    Middle stages describe texture, such as the pigment network and the even, polarised look of dermoscopy,
    which is where a rash photo and a dermoscopy close-up differ; the last stages have learned ImageNet objects.
    On validation, stages 3-5 alone reject as many non-lesion photos as stages 3-5 plus the final 1280 features,
    at 70 % of the weights (under 10 MB) and less compute.
    """

    def __init__(self, backbone: torch.nn.Module, taps: tuple[int, ...]):
        super().__init__()
        if not taps or any(not 0 <= t < len(backbone.blocks) for t in taps):
            raise ValueError(f"taps {list(taps)}: choose stages among 0-{len(backbone.blocks) - 1}")
        self.taps = tuple(sorted(set(taps)))
        self.stem = torch.nn.Sequential(backbone.conv_stem, backbone.bn1)
        self.stages = backbone.blocks[: self.taps[-1] + 1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        pooled = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.taps:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


class LesionCheckNet(torch.nn.Module):
    """What the package holds: the frozen pooled features through one linear layer, logits [N, 2]."""

    def __init__(self, features: PooledFeatures, head: torch.nn.Linear):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def extract_features(
    session: ort.InferenceSession, items: list[Item], pre: PreprocessConfig, *, copies: int, seed: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Features [len(items) * (1 + copies), D] from the exported feature graph, item-major: each image as it is,
    then `copies` versions through `nuisance`, each seeded by (seed, item index, copy) so a rerun reproduces them.

    ONNX Runtime rather than torch: about ten times faster for this network on a CPU, and the very graph the
    package runs."""
    inputs, chunks = [], []

    def flush() -> None:
        chunks.append(session.run(None, {INPUT_NAME: np.stack(inputs)})[0])
        inputs.clear()

    for index, item in enumerate(items):
        image = load_image(item.path)
        for copy in range(1 + copies):
            shown = image if copy == 0 else nuisance(image, np.random.default_rng([seed, index, copy]))
            inputs.append(preprocess(shown, pre))
            if len(inputs) == batch_size:
                flush()
    if inputs:
        flush()
    return np.concatenate(chunks).astype(np.float32)


def cached_features(
    cache_dir: Path, name: str, session, items, pre, *, copies, seed, key: dict
) -> tuple[np.ndarray, float | None]:
    """`extract_features`, saved as .npy under `cache_dir` and reused while the images and settings are the same.

    Returns the features and the seconds their extraction took (in this run or the one that cached them; None for
    a cache without that record), so the package's provenance counts the real cost.
    """
    fingerprint = json.dumps(
        {**key, "copies": copies, "seed": seed, "version": CACHE_VERSION, "pre": pre.__dict__,
         "items": [str(item.path) for item in items]},
        sort_keys=True, default=str,
    )
    path = Path(cache_dir) / f"{name}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}.npy"
    timing = path.with_suffix(".json")
    if path.is_file():
        log.info("features %s: cached %s", name, path)
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        return np.load(path), seconds
    started = time.perf_counter()
    features = extract_features(session, items, pre, copies=copies, seed=seed)
    seconds = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    timing.write_text(json.dumps({"seconds": seconds, "images": len(items) * (1 + copies)}) + "\n")
    log.info("features %s: %d images x %d in %.0f s -> %s", name, len(items), 1 + copies, seconds, path)
    return features, seconds


# ---------------------------------------------------------------------------------------------------- head


def fit_logistic_regression(features: np.ndarray, lesion: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression for P(lesion) (full-batch L-BFGS on standardised features).

    Returns (weights [D], bias) on the raw features: the standardisation is folded in, so the linear layer of the
    package takes the backbone's output as it is.
    """
    x = torch.from_numpy(features).double()
    y = torch.from_numpy(lesion.astype(np.float64))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    n_pos = float(y.sum())
    # Each class weighs half of the loss, whatever its size.
    weight = torch.where(y > 0, 0.5 / n_pos, 0.5 / (len(y) - n_pos))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ w + b
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    raw_w = (w.detach() / std).numpy()
    raw_b = float(b.detach() - (raw_w * mean.numpy()).sum())
    return raw_w, raw_b


def p_lesion(features: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ weights + bias)))


def linear_head(weights: np.ndarray, bias: float) -> torch.nn.Linear:
    """logits = [z/2, -z/2] with z the regression's log-odds: softmax gives P(lesion) = sigmoid(z) exactly."""
    head = torch.nn.Linear(len(weights), 2)
    with torch.no_grad():
        w = torch.from_numpy(weights).float()
        head.weight.copy_(torch.stack([w / 2, -w / 2]))
        head.bias.copy_(torch.tensor([bias / 2, -bias / 2]))
    return head


def pass_threshold(scores_by_source: dict[str, np.ndarray]) -> float:
    """The highest threshold at which every source passes MIN_VAL_PASS_RATE of its images, rounded down."""
    per_source = [
        choose_threshold(np.ones(len(s), bool), s, min_sensitivity=MIN_VAL_PASS_RATE) for s in scores_by_source.values()
    ]
    # Round down: rounding up could lift the threshold past the score that met the pass-rate target. A package
    # threshold must lie strictly inside (0, 1).
    return min(max(math.floor(min(per_source) * 1e4) / 1e4, 1e-4), 1 - 1e-4)


# ---------------------------------------------------------------------------------------------------- evaluation


def serve_scores(pack: ModelPack, items: list[Item], *, nuisance_seed: int | None = None, batch_size: int = 64
                 ) -> np.ndarray:
    """P(lesion) for each item exactly as the app computes it (load_image -> preprocess -> ONNX Runtime).

    With `nuisance_seed`, each image first goes through one seeded `nuisance` (the robustness check: the same
    test images as another camera or clinic might deliver them)."""
    scores = []
    lesion_index = pack.config.labels.index(LESION_LABEL)
    for start in range(0, len(items), batch_size):
        images = [load_image(i.path) for i in items[start:start + batch_size]]
        if nuisance_seed is not None:
            images = [nuisance(im, np.random.default_rng([nuisance_seed, start + k])) for k, im in enumerate(images)]
        batch = np.stack([preprocess(image, pack.config.preprocess) for image in images])
        scores.append(pack.probabilities(batch)[:, lesion_index])
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def rates(items: list[Item], scores: np.ndarray, config: PackageConfig) -> dict[str, dict]:
    """Per group: n, how many passed the check (`postprocess.lesion_check`), and the pass or rejection rate
    (lesion groups: pass rate; not_lesion categories: rejection rate) with its 95 % Wilson interval."""
    groups: dict[str, list[bool]] = defaultdict(list)
    lesion_of: dict[str, bool] = {}
    for item, score in zip(items, scores, strict=True):
        probabilities = {LESION_LABEL: float(score), "not_lesion": 1.0 - float(score)}
        groups[item.group].append(lesion_check(probabilities, config).passed)
        lesion_of[item.group] = item.lesion
    out = {}
    for group in sorted(groups):
        passed = groups[group]
        good = sum(passed) if lesion_of[group] else len(passed) - sum(passed)
        low, high = wilson_interval(good, len(passed))
        rate_name = "pass_rate" if lesion_of[group] else "rejection_rate"
        out[group] = {"n": len(passed), "passed": int(sum(passed)), rate_name: round(good / len(passed), 4),
                      "ci95": [round(low, 4), round(high, 4)]}
    return out


def pooled_rejection(per_group: dict[str, dict]) -> float:
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


# ---------------------------------------------------------------------------------------------------- the command


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lesion-check", help="fit the 'is this a skin-lesion close-up?' package", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--show", type=Path, metavar="PACKAGE",
                        help="print the table recorded in a package; fit nothing")
    parser.add_argument("--ham", type=Path, help="HAM10000 folder (positives)")
    parser.add_argument("--ham-split", type=Path, default=Path("models/ham10000_split.csv"))
    parser.add_argument("--isic", type=Path, help="ISIC 2017 folder (positives, split by isic2017_split)")
    parser.add_argument("--not-lesion", type=Path, help="not_lesion folder (negatives)")
    parser.add_argument("--mvb", type=Path, help="malignant-vs-benign folder: its non-HAM images are checked only")
    parser.add_argument("--not-lesion-split", type=Path, default=Path("models/not_lesion_split.csv"),
                        help="where to write the not_lesion fit/val/test split")
    parser.add_argument("--arch", default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--no-pretrained", action="store_true", help="random backbone weights (tests)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--taps", type=int, nargs="+", default=[3, 4, 5],
                        help="backbone stages whose pooled outputs are the features (lite0 has stages 0-6)")
    parser.add_argument("--positive-copies", type=int, default=1, help="augmented copies of each positive")
    parser.add_argument("--negative-copies", type=int, default=3, help="augmented copies of each negative")
    parser.add_argument("--flat-images", type=int, default=400, help="generated flat pictures to fit on")
    parser.add_argument("--cost-images", type=int, default=100, help="images timed for the cost figure")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the machine is usually shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="run folder (feature cache, args.json)")
    parser.add_argument("--package", type=Path, help="package folder to write, e.g. models/lesion_check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.show:
        print(format_table(ModelPack.load(args.show, threads=1).config))
        return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("ham", "isic", "not_lesion", "mvb", "out", "package")
               if getattr(args, n) is None]
    if missing:
        raise SystemExit(f"lesion-check: {', '.join(missing)} required (or --show PACKAGE)")
    config = fit(args)
    print(format_table(config))
    return 0


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

    head, val = _choose_head(x_fit, y_fit, x_val_pos, val_pos, x_val_neg)
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


def _choose_head(x_fit, y_fit, x_val_pos, val_pos, x_val_neg) -> tuple[dict, dict]:
    """Fit one regression per L2_GRID penalty; keep the one that rejects the most validation negatives at its
    own threshold (ties: the stronger penalty)."""
    sources = sorted({i.group for i in val_pos})
    best = None
    for l2 in sorted(L2_GRID, reverse=True):
        weights, bias = fit_logistic_regression(x_fit, y_fit, l2)
        pos_scores = p_lesion(x_val_pos, weights, bias)
        by_source = {s: pos_scores[[i.group == s for i in val_pos]] for s in sources}
        threshold = pass_threshold(by_source)
        rejection = float(np.mean(p_lesion(x_val_neg, weights, bias) < threshold))
        log.info("l2 %g: threshold %.4f, val rejection %.4f", l2, threshold, rejection)
        if best is None or rejection > best["val_rejection"]:
            best = {"l2": l2, "weights": weights, "bias": bias, "threshold": threshold, "val_rejection": rejection,
                    "val_pass": {s: round(float(np.mean(v >= threshold)), 4) for s, v in by_source.items()}}
    val = {"pass_rate": best["val_pass"], "rejection_rate": round(best["val_rejection"], 4), "l2": best["l2"]}
    return best, val


def _headline_rates(per_group: dict[str, dict]) -> dict[str, float]:
    """The flat numbers the app's model list shows: pooled rejection and each positive source's pass rate."""
    out = {"rejection_rate": pooled_rejection({g: r for g, r in per_group.items() if "rejection_rate" in r})}
    for group in (*POSITIVE_TEST_SOURCES, "mvb_non_ham"):
        if group in per_group:
            out[f"pass_rate_{group}"] = per_group[group]["pass_rate"]
    return out


def _split_name(args) -> str:
    return f"{args.ham_split}:test + isic2017:test + {args.not_lesion_split}:test"


# ---------------------------------------------------------------------------------------------------- reporting


def format_table(config: PackageConfig) -> str:
    """The per-source and per-category table (Markdown), with the targets and whether each was met."""
    m = config.metrics
    lines = [
        f"Threshold: P(lesion) >= {config.decision_threshold:.4f} passes. {_cost_sentence(m['cost_ms'])}",
        "",
        "| Test images | n | Passed the check | Rate | 95 % CI | Target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for group, r in m["per_source"].items():
        lines.append(_row(f"lesion: {_GROUP_NAMES.get(group, group)}", r, _target(group, r)))
    for group, r in m["per_category"].items():
        lines.append(_row(f"not a lesion: {group}", r, ""))
    pooled = m["rejection_rate"]
    verdict = "met" if pooled >= TARGETS["rejection"] else "MISSED"
    n_neg = sum(r["n"] for r in m["per_category"].values())
    n_passed = sum(r["passed"] for r in m["per_category"].values())
    lines.append(f"| **not a lesion: all categories** | {n_neg} | {n_passed} "
                 f"| **reject {pooled:.1%}** | | >= {TARGETS['rejection']:.0%} reject: {verdict} |")
    for group, r in m.get("robustness", {}).items():
        kind = "lesion" if "pass_rate" in r else "not a lesion"
        lines.append(_row(f"{kind}: {_GROUP_NAMES.get(group, group)}", r, "(no target: robustness)"))
    return "\n".join(lines)


def _row(name: str, r: dict, target: str) -> str:
    rate = f"pass {r['pass_rate']:.1%}" if "pass_rate" in r else f"reject {r['rejection_rate']:.1%}"
    return f"| {name} | {r['n']} | {r['passed']} | {rate} | {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%} | {target} |"


def _target(group: str, numbers: dict) -> str:
    if group in POSITIVE_TEST_SOURCES:
        return f">= {TARGETS['pass']:.0%} pass: {'met' if numbers['pass_rate'] >= TARGETS['pass'] else 'MISSED'}"
    if group.endswith("_seen"):
        return "(no target: a copy of a fitted image)"
    return "(no target: never fitted on)"


def _cost_sentence(cost: dict) -> str:
    return (f"Cost: {cost['model']} ms per image for the model (median; {cost['model_p10']} ms at the 10th "
            f"percentile), ONNX Runtime on {cost['threads']} CPU thread, plus {cost['decode']} ms decoding and "
            f"{cost['preprocess']} ms preprocessing; measured on a shared CPU (load average "
            f"{cost['load_average_1min']}).")


_SOURCE_NAMES = {"ham10000": "HAM10000", "isic2017": "ISIC 2017"}
_GROUP_NAMES = {
    "ham10000": "HAM10000 test split",
    "isic2017": "ISIC 2017 test split",
    "mvb_non_ham": "malignant-vs-benign, non-HAM10000, not an ISIC 2017 training copy (never fitted on)",
    "mvb_non_ham_seen": "malignant-vs-benign, non-HAM10000, copy of an ISIC 2017 training image",
    f"ham10000{NUISANCE_SUFFIX}": "HAM10000 test split, each through a random nuisance (colour, frame, blur, JPEG...)",
    f"isic2017{NUISANCE_SUFFIX}": "ISIC 2017 test split, each through a random nuisance",
    f"not_lesion{NUISANCE_SUFFIX}": "all not_lesion test photos, each through a random nuisance",
}


def render_card(config: PackageConfig) -> str:
    """The package's model card: what the check is for, how it was fitted, and the per-category table."""
    m, p = config.metrics, config.provenance
    data = ModelCardData(
        license=LICENSE, library_name="onnx", pipeline_tag="image-classification",
        tags=["image-classification", "onnx", "dermoscopy", "out-of-distribution-detection", "skin-demo",
              config.architecture, "lesion-check"],
        datasets=["HAM10000", "ISIC-Archive"],
    )
    height, width = config.preprocess.size
    val_pass = ", ".join(
        f"{_SOURCE_NAMES.get(g, g)} val passes {r:.1%}" for g, r in m["validation"]["pass_rate"].items())
    fit = p["fit_images"]
    copies = fit["augmented_copies"]
    body = f"""# skin-demo-lesion-check: is this a dermoscopy close-up of a skin lesion? (ONNX)

> {NOT_A_DIAGNOSIS}

This model does not look at the lesion's nature at all. It is the **guard** in front of the skin-demo lesion
models: it answers whether an uploaded picture looks like the dermoscopy close-ups those models were trained on,
so that a cat, a receipt or a rash photo gets "this does not look like a close-up of a single skin lesion"
instead of a confident but meaningless malignancy score. Passing the check says nothing about whether a lesion
is harmless or dangerous.

## Model

- Task: `{config.task}`; labels `{list(config.labels)}` (output `logits`, float32 `[N, 2]`, in that order);
  input `image`, float32 `[N, 3, {height}, {width}]`.
- {p.get('method', config.architecture)}.
- P(lesion) = softmax(logits)[0]. The image **passes** when P(lesion) >= **{config.decision_threshold:.4f}**
  (`decision_threshold`; `skin_demo.postprocess.lesion_check`). {p.get('threshold_rule', '')}.
- Preprocessing: `config.json` `preprocess` (also embedded in `model.onnx`, metadata key `skin_demo.config`):
  shorter side to {height} px ({config.preprocess.interpolation}), centre crop {height}x{width}, mean
  {list(config.preprocess.mean)}, std {list(config.preprocess.std)}.

## Data

- `lesion`: HAM10000 (200x150 copy; its `train` split in `models/ham10000_split.csv`) and ISIC 2017 (MSK; the
  challenge's `train` split) for fitting; their validation splits chose the penalty and the threshold; their test
  splits are reported below. Dermoscopy from other clinics: the non-HAM10000 images of the ISIC "malignant vs
  benign" set were never fitted on and are reported as such.
- `not_lesion`: the skin-demo `not_lesion` set (everyday photos from ImageNet, rashes and other skin diseases from
  DermNet, healthy abdominal skin, hands and faces, receipts), split 60/20/20 per category with a fixed seed
  (`models/not_lesion_split.csv`: file names only).
- Both classes were augmented with the same nuisances (colour casts, black vignettes and frames, squashed aspect,
  low resolution, JPEG, rotations), so that none of them is a cue for either class.
- Generated flat pictures (one colour, maybe a gradient and noise) were added to `not_lesion`: without them a
  plain white or pink picture passed.

## Evaluation (held-out test images, through ONNX Runtime and the app's own preprocessing)

{format_table(config)}

On validation (which chose the penalty and the threshold): {val_pass}; rejects
{m['validation']['rejection_rate']:.1%} of the non-lesion photos. All numbers: `config.json` (`metrics`) and
`eval/metrics.json`; `python -m skin_demo.train lesion-check --show <package>` prints the table.

## Limitations

- Trained on what the `not_lesion` set has. Other non-lesion pictures (screenshots, drawings, X-rays, close-ups
  of fabric or food) were never seen and may pass.
- Clinical (non-dermoscopy) close-ups of a lesion are outside what the lesion models were trained on, and the
  check rejects many of them on purpose.
- Dermoscopy from other devices than those in HAM10000 and ISIC may be rejected more often than the test numbers
  above suggest. The never-fitted malignant-vs-benign source in the table mixes dermoscopy with clinical photos
  of a body site (arm, face, a ruler beside a spot), which the check is meant to reject, so its pass rate is a
  lower bound for dermoscopy from another clinic.
- Fair skin dominates the training data of both classes.

## Training details

| | |
|---|---|
| Trained | {p.get('trained_at')} |
| Code commit | {p.get('code_commit')} |
| Hardware | {p.get('hardware')} |
| Feature extraction | {_minutes(p.get('feature_extraction_minutes'))} (once; later runs reuse the cached features) |
| This run (fitting, export, evaluation) | {p.get('train_minutes')} min |
| Fit images | {fit['lesion']} lesion + {fit['not_lesion']} not_lesion, with {copies['lesion']} and \
{copies['not_lesion']} augmented copies of each, + {fit.get('flat_generated', 0)} generated flat pictures |
| ONNX parity (max abs logit diff vs torch) | {p.get('onnx_parity_max_abs_logit_diff')} |

## License

CC BY-NC 4.0, following the data (HAM10000, ISIC Archive, DermNet, ImageNet terms): non-commercial use only.
"""
    return "---\n" + data.to_yaml() + "\n---\n\n" + body


def _minutes(value: float | None) -> str:
    return "not recorded" if value is None else f"{value} min"


