"""The lesion check's images: the seeded not_lesion split, the generated flat pictures, the dermoscopy positives
and the clinical (ordinary camera) positives, each with the label the check learns: its image domain."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skin_demo.postprocess import CLINICAL, DERMOSCOPY, DOMAIN_LABELS, NOT_LESION
from skin_demo.train.data import read_ham10000, read_split

NOT_LESION_FRACTIONS = (0.6, 0.2, 0.2)  # fit / val / test, per category
POSITIVE_TEST_SOURCES = ("ham10000", "isic2017", "clinical_dermnet", "clinical_sd198")
ALL_CLINICAL = "clinical_all"  # the two clinical atlases' test photos together, where issue 15's targets apply
FLAT_GROUP = "flat or blank picture (generated)"
NUISANCE_SUFFIX = "+nuisance"  # group name of the robustness check: test images through one random nuisance


@dataclass(frozen=True)
class Item:
    """One image of the lesion-check data: where it is, which source or category, which subset, its label."""

    path: Path
    name: str  # file name or image id, as in the split CSVs
    group: str  # a positive source ("ham10000", "clinical_sd198", ...) or a not_lesion category
    subset: str  # "fit", "val", "test" (or "check" for the source never fitted on)
    label: str  # one of DOMAIN_LABELS: "dermoscopy", "clinical", "not_lesion"

    def __post_init__(self) -> None:
        if self.label not in DOMAIN_LABELS:
            raise ValueError(f"label {self.label!r} is not one of {DOMAIN_LABELS}")

    @property
    def lesion(self) -> bool:
        """A close-up of a skin lesion (dermoscopy or clinical), which the check should pass."""
        return self.label != NOT_LESION


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
            items.append(Item(root / name, name, category, subset, NOT_LESION))
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
            items.append(Item(path, path.name, FLAT_GROUP, subset, NOT_LESION))
    return items


def read_positives(ham: Path, ham_split: Path, isic: Path, mvb: Path, clinical: Path | None = None) -> list[Item]:
    """HAM10000 by its split CSV, ISIC 2017 by its challenge split, the non-HAM10000 malignant-vs-benign images
    (dermoscopy), and the clinical photos by their grouped split (`clinical_dermnet`, `clinical_sd198`).

    The malignant-vs-benign images are only checked, never fitted on ("check"): a dermoscopy source the guard has
    not seen. Those that are copies of an ISIC 2017 training image are tagged `mvb_non_ham_seen`, so the unseen
    rest can be reported on its own.
    """
    split_of = read_split(ham_split)
    subset_name = {"train": "fit", "val": "val", "test": "test"}
    items = [
        Item(s.path, s.image_id, "ham10000", subset_name[split_of[s.image_id]], DERMOSCOPY)
        for s in read_ham10000(ham)
        if s.image_id in split_of
    ]
    seen_in_fit = set()
    with (Path(isic) / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            subset = subset_name[row["isic2017_split"]]
            path = Path(isic) / "images" / f"{row['image_id']}.jpg"
            items.append(Item(path, row["image_id"], "isic2017", subset, DERMOSCOPY))
            if subset == "fit" and row.get("fanconi_duplicate"):
                seen_in_fit.add(row["fanconi_duplicate"])
    with (Path(mvb) / "fanconi_to_ham10000_map.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["ham_lesion_id"]:
                continue
            name = f"{row['split']}/{row['label']}/{row['file']}"
            group = "mvb_non_ham_seen" if name in seen_in_fit else "mvb_non_ham"
            items.append(Item(Path(mvb) / name, name, group, "check", DERMOSCOPY))
    if clinical is not None:
        with (Path(clinical) / "labels.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                path = Path(clinical) / "images" / f"{row['image_id']}.jpg"
                items.append(Item(path, row["image_id"], f"clinical_{row['source']}", subset_name[row["split"]],
                                  CLINICAL))
    return items
