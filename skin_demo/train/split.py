"""A deterministic train/val/test split grouped by lesion and stratified by class.

Images of one lesion never straddle two splits (HAM10000 has up to 6 images per lesion), and each class keeps
roughly the same share in every split.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from pathlib import Path

from skin_demo.train.data import Sample

SPLITS = ("train", "val", "test")


def grouped_stratified_split(
    samples: list[Sample], *, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Assign every sample's lesion to one split; returns image_id -> split.

    Lesions are grouped by class (a lesion's images share a diagnosis), shuffled with `seed`, and dealt out
    so that each class's image count per split tracks `fractions`: the lesion goes to the split that is
    furthest below its target for that class.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    lesions: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        lesions[sample.lesion_id or sample.image_id].append(sample)
    by_class: dict[str, list[str]] = defaultdict(list)
    for lesion_id, members in lesions.items():
        diagnoses = {m.dx for m in members}
        if len(diagnoses) != 1:
            raise ValueError(f"lesion {lesion_id} has images with different diagnoses: {sorted(diagnoses)}")
        by_class[members[0].dx or "unknown"].append(lesion_id)

    rng = random.Random(seed)
    assignment = {}
    for dx in sorted(by_class):
        lesion_ids = sorted(by_class[dx])
        rng.shuffle(lesion_ids)
        total = sum(len(lesions[lid]) for lid in lesion_ids)
        filled = dict.fromkeys(SPLITS, 0)
        for lesion_id in lesion_ids:
            deficit = {s: fractions[i] * total - filled[s] for i, s in enumerate(SPLITS)}
            split = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
            filled[split] += len(lesions[lesion_id])
            for member in lesions[lesion_id]:
                assignment[member.image_id] = split
    return assignment


def write_split_csv(path: Path, samples: list[Sample], assignment: dict[str, str]) -> None:
    """Write image_id, lesion_id, dx, split for every sample, sorted by image_id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "lesion_id", "dx", "split"])
        for sample in sorted(samples, key=lambda s: s.image_id):
            writer.writerow([sample.image_id, sample.lesion_id, sample.dx, assignment[sample.image_id]])
