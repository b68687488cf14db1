"""A small synthetic HAM10000-layout folder and split CSV, for the evaluate / quantize / publish tests.

Real JPEG files in the real layout (`HAM10000_metadata.csv` + `images/<image_id>.jpg`), so the code under test reads
them with `read_ham10000`, `read_split`, `imaging.load_image` and `imaging.preprocess` exactly as it reads the real
data. Each class gets its own base colour plus noise: the tiny test packages (which look at channel means) then
get some images right and some wrong, which is what a metrics test wants.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from skin_demo.taxonomy import LESION_CODES

SUBSETS = ("train", "val", "test")
_BASE_COLOURS = {
    "akiec": (200, 60, 60),
    "bcc": (220, 140, 40),
    "bkl": (120, 180, 170),
    "df": (90, 160, 80),
    "mel": (170, 110, 160),
    "nv": (80, 120, 170),
    "vasc": (230, 200, 70),
}


def make_fake_ham10000(
    root: Path, per_class: int = 6, size: tuple[int, int] = (64, 48), seed: int = 0, two_folders: bool = False
) -> Path:
    """Write `per_class` images of every lesion code under `root` in the HAM10000 layout; returns `root`.

    Image ids are ISIC_00000NN; every second image shares a lesion id with the one before (as in HAM10000).
    `two_folders` spreads the images over `HAM10000_images_part_1/2`, as in the original release.
    """
    root = Path(root)
    folders = ("HAM10000_images_part_1", "HAM10000_images_part_2") if two_folders else ("images",)
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    number = 0
    for code in LESION_CODES:
        for i in range(per_class):
            image_id = f"ISIC_{number:07d}"
            lesion_id = f"HAM_{number - (i % 2):07d}"
            base = np.array(_BASE_COLOURS[code], dtype=np.float64)
            noise = rng.normal(0.0, 60.0, size=(size[1], size[0], 3)) + rng.normal(0.0, 50.0, size=3)
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            folder = folders[number % len(folders)]
            Image.fromarray(pixels, "RGB").save(root / folder / f"{image_id}.jpg", quality=90)
            rows.append([lesion_id, image_id, code, "histo", "50.0", "male", "back"])
            number += 1
    with (root / "HAM10000_metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        writer.writerows(rows)
    return root


def copy_real_ham10000(root: Path, real_ham: Path, per_class: int) -> Path:
    """A HAM10000-layout folder with the first `per_class` real images of every class copied from `real_ham`."""
    with (Path(real_ham) / "HAM10000_metadata.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    chosen = [row for code in LESION_CODES for row in [r for r in rows if r["dx"] == code][:per_class]]
    images = Path(root) / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in chosen:
        name = f"{row['image_id']}.jpg"
        shutil.copyfile(Path(real_ham) / "images" / name, images / name)
    with (Path(root) / "HAM10000_metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(chosen)
    return Path(root)


def write_fake_split(ham_root: Path, path: Path) -> Path:
    """A split CSV for a fake (or real) HAM10000 folder: lesions assigned to train/val/test in turn, per class."""
    with (Path(ham_root) / "HAM10000_metadata.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lesion_subset: dict[str, str] = {}
    per_class: dict[str, int] = {}
    for row in rows:
        if row["lesion_id"] not in lesion_subset:
            turn = per_class.get(row["dx"], 0)
            lesion_subset[row["lesion_id"]] = SUBSETS[turn % 3]
            per_class[row["dx"]] = turn + 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "lesion_id", "dx", "split"])
        for row in rows:
            writer.writerow([row["image_id"], row["lesion_id"], row["dx"], lesion_subset[row["lesion_id"]]])
    return path
