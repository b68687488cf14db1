"""`Sample`, task labels, and the HAM10000 reader (metadata CSV + images in one or more folders).

Missing or unreadable images are reported with their ids (`DataError`), never dropped silently. Several sources
are joined into one table in `sources.py`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from skin_demo.taxonomy import LESION_CODES, MALIGNANCY_LABELS, MALIGNANT_CODES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TASKS = ("lesion_type", "malignancy")
IGNORE_LABEL = -100  # torch's cross-entropy ignore_index: "this sample has no label for this task"


class DataError(ValueError):
    """The data on disk does not match what its metadata promises."""


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it."""

    image_id: str
    path: Path
    lesion_id: str | None
    dx: str | None  # HAM10000 code, or None where only benign/malignant is known
    malignant: bool
    source: str  # e.g. "ham10000", "isic2017", "clinical"
    domain: str = "dermoscopy"  # the image domain: "dermoscopy" or "clinical" (an ordinary camera photo)

    @property
    def class_key(self) -> str:
        """The sample's class for balanced sampling: its HAM10000 code, else its benign / malignant label (a
        clinical squamous cell carcinoma has no HAM10000 code)."""
        return self.dx or ("malignant" if self.malignant else "benign")


def task_labels(task: str) -> tuple[str, ...]:
    """The label codes a task's model emits, in output order."""
    if task == "lesion_type":
        return LESION_CODES
    if task == "malignancy":
        return MALIGNANCY_LABELS
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def label_index(sample: Sample, task: str) -> int:
    """The sample's class index for `task`, or IGNORE_LABEL where the sample has no such label."""
    if task == "lesion_type":
        return LESION_CODES.index(sample.dx) if sample.dx in LESION_CODES else IGNORE_LABEL
    if task == "malignancy":
        return int(sample.malignant)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def read_ham10000(root: Path) -> list[Sample]:
    """Read `HAM10000_metadata.csv` under `root` and find each image anywhere below `root`.

    The original release splits images over `HAM10000_images_part_1/2`; copies often use `images/`.
    Raises DataError listing the ids of images the metadata names but the folders lack.
    """
    root = Path(root)
    metadata = root / "HAM10000_metadata.csv"
    if not metadata.is_file():
        raise DataError(f"{metadata} not found: point --data at a HAM10000 folder")
    paths = _index_images(root)
    samples, missing = [], []
    with metadata.open(newline="") as handle:
        for row in csv.DictReader(handle):
            image_id = row["image_id"]
            path = paths.get(image_id)
            if path is None:
                missing.append(image_id)
                continue
            dx = row["dx"]
            samples.append(Sample(image_id, path, row["lesion_id"], dx, dx in MALIGNANT_CODES, "ham10000"))
    _raise_if_missing(missing, root)
    return samples


def read_split(path: Path) -> dict[str, str]:
    """image_id -> "train" / "val" / "test" from a split CSV (image_id, lesion_id, dx, split)."""
    with Path(path).open(newline="") as handle:
        return {row["image_id"]: row["split"] for row in csv.DictReader(handle)}


def _index_images(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}


def _raise_if_missing(missing: list[str], root: Path) -> None:
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise DataError(f"{len(missing)} images named in the metadata are not under {root}: {shown}")
