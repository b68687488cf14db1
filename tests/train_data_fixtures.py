"""Small HAM10000-layout folders for training tests: real images when ../shared/data has them, else generated."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from skin_demo.taxonomy import LESION_CODES

METADATA_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def make_small_ham(root: Path, per_class: int, real_ham: Path | None) -> Path:
    """A HAM10000-layout folder with `per_class` images per class, split over two image folders.

    With `real_ham`, the images are real ones copied from it (first images of each class); otherwise they are
    generated 200x150 JPEGs whose colour depends on the class, so a model can learn something.
    """
    rows = []
    if real_ham is not None:
        with (real_ham / "HAM10000_metadata.csv").open(newline="") as handle:
            by_class: dict[str, list[dict]] = {}
            for row in csv.DictReader(handle):
                by_class.setdefault(row["dx"], []).append(row)
        rows = [row for dx in LESION_CODES for row in by_class[dx][:per_class]]
    else:
        rng = np.random.default_rng(0)
        for k, dx in enumerate(LESION_CODES):
            for i in range(per_class):
                rows.append({"lesion_id": f"HAM_{k}{i:04d}", "image_id": f"ISIC_{k}{i:06d}", "dx": dx,
                             "dx_type": "histo", "age": "50.0", "sex": "male", "localization": "back"})
    for n, row in enumerate(rows):
        folder = root / ("HAM10000_images_part_1" if n % 2 else "HAM10000_images_part_2")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{row['image_id']}.jpg"
        if real_ham is not None:
            shutil.copyfile(real_ham / "images" / f"{row['image_id']}.jpg", target)
        else:
            k = LESION_CODES.index(row["dx"])
            base = np.array([40 + 30 * k, 200 - 25 * k, 90 + 15 * (k % 3)], dtype=np.int16)
            noise = np.random.default_rng(n).integers(-30, 30, (150, 200, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(target, quality=90)
    with (root / "HAM10000_metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root
