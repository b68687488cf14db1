"""A small synthetic clinical-photo folder (`labels.csv` + `images/<id>.jpg`) in the layout of
../shared/data/clinical, for tests: both atlases, every split, benign and malignant, squamous cell carcinoma
without a HAM10000 code, and a same-lesion group of two photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# (ham7, malignant): scc has no HAM10000 code
CLASSES = (("mel", 1), ("nv", 0), ("bcc", 1), ("vasc", 0), ("", 1))
SPLITS = ("train", "val", "test")


def make_fake_clinical(root: Path, per_class_and_split: int = 2, seed: int = 0) -> Path:
    """Write `per_class_and_split` photos per (class, split), alternating DermNet-sized (384x325) and SD-198-sized
    (384x245) pictures. The first two training photos share one group. Returns `root`."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for split in SPLITS:
        for k, (ham7, malignant) in enumerate(CLASSES):
            for j in range(per_class_and_split):
                source = ("dermnet", "sd198")[j % 2]
                image_id = f"{'DN' if source == 'dermnet' else 'SD'}_{len(rows):04d}"
                width, height = (384, 325) if source == "dermnet" else (384, 245)
                base = np.array([200 - 20 * k, 150, 130 + 10 * k], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(root / "images" / f"{image_id}.jpg", quality=88)
                rows.append([image_id, source, ham7 or "Squamous cell carcinoma", ham7, malignant, image_id, split,
                             width, height, f"{source}/{image_id}.jpg"])
    rows[1][5] = rows[0][0]  # the same lesion photographed twice
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "source", "source_label", "ham7", "malignant", "group_id", "split", "width",
                         "height", "source_path"])
        writer.writerows(rows)
    return root
