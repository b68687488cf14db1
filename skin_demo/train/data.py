"""Readers for the dermoscopy data layouts maintainers have, as one list of `Sample`s.

Layouts: HAM10000 (metadata CSV + images in one or more folders), the ISIC challenge ground-truth CSV (one-hot
columns per class) and a class-per-subfolder tree (`train/benign`, `test/malignant`, ...). Missing or
unreadable images are reported with their ids (`DataError`), never dropped silently.
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
    source: str  # e.g. "ham10000", "isic_mvb"


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


def read_isic_ground_truth(csv_path: Path, image_dir: Path) -> list[Sample]:
    """Read an ISIC 2018 task-3 style ground-truth CSV (`image` + one-hot MEL, NV, BCC, AKIEC, BKL, DF, VASC)."""
    paths = _index_images(Path(image_dir))
    samples, missing = [], []
    with Path(csv_path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            image_id = row["image"]
            hot = [code for code in LESION_CODES if float(row.get(code.upper(), 0) or 0) >= 0.5]
            if len(hot) != 1:
                raise DataError(f"{csv_path}: row {image_id} has {len(hot)} positive classes, expected exactly 1")
            path = paths.get(image_id)
            if path is None:
                missing.append(image_id)
                continue
            dx = hot[0]
            samples.append(Sample(image_id, path, None, dx, dx in MALIGNANT_CODES, "isic"))
    _raise_if_missing(missing, Path(image_dir))
    return samples


def read_class_folders(root: Path, *, source: str = "folders") -> list[Sample]:
    """Read a class-per-subfolder tree: `<root>/[<split>/]<class>/<image>`.

    A class folder is a HAM10000 code (`mel`, `nv`, ...) or `benign` / `malignant`. The image id is the path
    relative to `root` (file names repeat across splits in such trees).
    """
    root = Path(root)
    samples = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label = path.parent.name.lower()
        image_id = path.relative_to(root).as_posix()
        if label in LESION_CODES:
            samples.append(Sample(image_id, path, None, label, label in MALIGNANT_CODES, source))
        elif label in MALIGNANCY_LABELS:
            samples.append(Sample(image_id, path, None, None, label == "malignant", source))
        else:
            raise DataError(f"{path}: folder {label!r} is neither a lesion code {LESION_CODES} nor benign/malignant")
    if not samples:
        raise DataError(f"no images found under {root}")
    return samples


def read_malignant_vs_benign(root: Path, *, drop_suspected_noise: bool = True) -> list[Sample]:
    """The ISIC malignant-vs-benign set with its HAM10000 cross-reference applied.

    `fanconi_to_ham10000_map.csv` says which files are HAM10000 images in disguise: those get the HAM lesion id
    and dx, so a lesion-grouped split can exclude them. Files in `suspected_label_noise.csv` are dropped by
    default (their benign/malignant label is uncertain).
    """
    root = Path(root)
    samples = read_class_folders(root, source="isic_mvb")
    ham = {}
    map_path = root / "fanconi_to_ham10000_map.csv"
    if map_path.is_file():
        with map_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                key = f"{row['split']}/{row['label']}/{row['file']}"
                ham[key] = (row["ham_lesion_id"] or None, row["ham_dx"] or None)
    noisy = set()
    noise_path = root / "suspected_label_noise.csv"
    if drop_suspected_noise and noise_path.is_file():
        with noise_path.open(newline="") as handle:
            noisy = {row["file"] for row in csv.DictReader(handle)}
    out = []
    for sample in samples:
        if sample.image_id in noisy:
            continue
        lesion_id, dx = ham.get(sample.image_id, (None, None))
        out.append(Sample(sample.image_id, sample.path, lesion_id, dx, sample.malignant, sample.source))
    return out


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
