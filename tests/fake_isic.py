"""A small synthetic ISIC 2017-layout folder (`labels.csv` + `images/<id>.jpg`, 256x256 JPEGs) for tests.

Same columns as ../shared/data/isic2017/labels.csv. One group spans two splits on purpose, so tests can check
that the loader keeps no group on both sides.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("nv", "bkl", "mel")
SPLITS = ("train", "val", "test")
STRADDLING_GROUP = "ISIC_9000000"


def make_fake_isic2017(root: Path, per_class_and_split: int = 3, size: int = 256, seed: int = 0) -> Path:
    """Write `per_class_and_split` images per (class, split); the first train image and the first test image share
    group STRADDLING_GROUP. Returns `root`."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    number = 9_000_000
    for split in SPLITS:
        for k, dx in enumerate(CLASSES):
            for _ in range(per_class_and_split):
                image_id = f"ISIC_{number:07d}"
                base = np.array([90 + 60 * k, 110, 170 - 50 * k], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(root / "images" / f"{image_id}.jpg", quality=90)
                rows.append([image_id, dx, int(dx == "mel"), split, image_id, ""])
                number += 1
    test_first = next(i for i, row in enumerate(rows) if row[3] == "test")
    rows[test_first][4] = STRADDLING_GROUP  # the first train image's group reaches into test
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "dx", "malignant", "isic2017_split", "group_id", "fanconi_duplicate"])
        writer.writerows(rows)
    return root
