"""A small synthetic not_lesion folder (`labels.csv` + `images/`) in the layout of ../shared/data/not_lesion, for
tests: five categories, noise pictures of one colour each."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ("everyday photo", "rash or other skin disease", "healthy skin", "hands and faces", "document")


def make_fake_not_lesion(root: Path, per_category: int = 5, seed: int = 0) -> Path:
    """Write `per_category` 64x48 pictures per category (the seeded split gives 3 / 1 / 1 of 5). Returns `root`."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "source", "category", "source_path", "width", "height"])
        for c, category in enumerate(CATEGORIES):
            for i in range(per_category):
                name = f"images/c{c}_{i}.jpg"
                base = np.array((40 + 40 * c, 200 - 30 * c, 120), dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(root / name, quality=90)
                writer.writerow([name, f"source{c}", category, name, 64, 48])
    return root
