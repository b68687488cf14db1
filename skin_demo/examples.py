"""Example images for the demo's gallery: pulled from a local HAM10000 copy's held-out test split.

    python -m skin_demo.examples pull --from /path/to/ham10000 [--split models/ham10000_split.csv] [--per-class 2]
        [--limit 12]

copies a few test-split images per class into examples/ and writes examples/manifest.csv
(file, dx, label, source, licence). Only the test split is used, so no example was seen in training. The twelve
that `pull` gives with its defaults are committed (the one exception to "no dataset image in the repository":
HAM10000 is CC BY-NC 4.0, which allows redistribution with attribution, given per image in the manifest), so a
fresh clone and a Space built from git open with examples. The app reads the manifest with `read_manifest`; rows
whose image is absent are skipped.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from skin_demo import REPO_ROOT
from skin_demo.taxonomy import display_name

log = logging.getLogger(__name__)

DEFAULT_EXAMPLES_DIR = REPO_ROOT / "examples"
DEFAULT_SPLIT = REPO_ROOT / "models" / "ham10000_split.csv"
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "dx", "label", "source", "licence")
HAM10000_SOURCE = "HAM10000 {image_id} (test split)"
HAM10000_CITATION = (
    "HAM10000: Tschandl P., Rosendahl C., Kittler H., Sci. Data 5, 180161 (2018), doi:10.1038/sdata.2018.161, "
    "CC BY-NC 4.0"
)
HAM10000_LICENCE = "CC BY-NC 4.0"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# The repository commits no dataset image but these: at most this many HAM10000 test-split photos, each listed in
# manifest.csv with its licence, so a fresh clone and a Space built from git open with examples.
MAX_EXAMPLES = 12
MAX_EXAMPLE_BYTES = 100_000


class ExamplesError(ValueError):
    """The dataset folder or split file is not usable; the message says which file and why."""


@dataclass(frozen=True)
class Example:
    """One gallery entry: the image file and what to say about it."""

    path: Path
    dx: str
    label: str
    source: str
    licence: str

    @property
    def caption(self) -> str:
        """Gallery caption: the true label (short enough to read under a phone-sized thumbnail)."""
        return f"True label: {self.label}"

    @property
    def attribution(self) -> str:
        """Where the image comes from and under which licence."""
        return f"{self.source} · {self.licence}"


def read_manifest(examples_dir: Path | str) -> list[Example]:
    """The examples listed in `examples_dir/manifest.csv` whose image file exists (empty if there is none).

    Never raises for a missing or partial folder: the gallery is optional. File names are taken as plain names
    inside `examples_dir` (a manifest cannot point outside the folder).
    """
    folder = Path(examples_dir)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return []
    examples = []
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                name = Path(row.get("file") or "").name
                path = folder / name
                if not name or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    continue
                dx = (row.get("dx") or "").strip()
                examples.append(
                    Example(
                        path=path,
                        dx=dx,
                        label=(row.get("label") or "").strip() or display_name(dx),
                        source=(row.get("source") or "").strip() or "unknown source",
                        licence=(row.get("licence") or "").strip() or "unknown licence",
                    )
                )
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        log.warning("ignoring %s: %s", manifest, exc)
        return []
    return examples


def pull(
    dataset_dir: Path | str,
    *,
    split: Path | str = DEFAULT_SPLIT,
    per_class: int = 2,
    limit: int = MAX_EXAMPLES,
    out_dir: Path | str = DEFAULT_EXAMPLES_DIR,
) -> list[Example]:
    """Copy up to `per_class` test-split images of each class, at most `limit` in all, from a HAM10000 folder into
    `out_dir` + manifest.csv.

    dataset_dir must hold HAM10000_metadata.csv and images/<image_id>.jpg; split is a CSV with image_id,
    lesion_id, dx, split. Picks are deterministic (sorted by image_id), take at most one image per lesion, and go
    round the classes (every class's first image before any class's second), so a limit below
    classes x per_class still covers every class. Returns the examples written. Raises ExamplesError for a missing
    or malformed input file.
    """
    dataset_dir, split, out_dir = Path(dataset_dir), Path(split), Path(out_dir)
    if per_class < 1:
        raise ExamplesError(f"--per-class must be at least 1, got {per_class}")
    metadata = dataset_dir / "HAM10000_metadata.csv"
    images_dir = dataset_dir / "images"
    if not metadata.is_file():
        raise ExamplesError(f"{metadata}: not found (expected a HAM10000 folder with images/<image_id>.jpg)")
    dx_by_image = {row["image_id"]: row["dx"] for row in _read_csv(metadata, ("image_id", "dx"))}
    split_rows = _read_csv(split, ("image_id", "lesion_id", "dx", "split"))
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in sorted(split_rows, key=lambda r: r["image_id"]):
        if row["split"].strip() != "test":
            continue
        if dx_by_image.get(row["image_id"], row["dx"]) != row["dx"]:
            raise ExamplesError(f"{split}: {row['image_id']} has dx {row['dx']!r} but the metadata says otherwise")
        by_class[row["dx"]].append(row)
    if not by_class:
        raise ExamplesError(f"{split}: no rows with split == 'test'")

    picks: dict[str, list[dict[str, str]]] = {}
    for dx in sorted(by_class):
        lesions: set[str] = set()
        picks[dx] = []
        for row in by_class[dx]:
            if len(picks[dx]) == per_class:
                break
            if row["lesion_id"] in lesions:
                continue
            if not (images_dir / f"{row['image_id']}.jpg").is_file():
                log.warning("skipping %s: not found in %s", row["image_id"], images_dir)
                continue
            lesions.add(row["lesion_id"])
            picks[dx].append(row)
    rounds = [(dx, rows[k]) for k in range(per_class) for dx, rows in picks.items() if k < len(rows)][:limit]

    out_dir.mkdir(parents=True, exist_ok=True)
    examples: list[Example] = []
    for dx, row in sorted(rounds, key=lambda pick: (pick[0], pick[1]["image_id"])):
        target = out_dir / f"{row['image_id']}.jpg"
        shutil.copyfile(images_dir / target.name, target)
        examples.append(
            Example(
                path=target,
                dx=dx,
                label=display_name(dx),
                source=HAM10000_SOURCE.format(image_id=row["image_id"]),
                licence=HAM10000_LICENCE,
            )
        )
    with (out_dir / MANIFEST).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_COLUMNS)
        for e in examples:
            writer.writerow([e.path.name, e.dx, e.label, e.source, e.licence])
    return examples


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ExamplesError(f"{path}: not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ExamplesError(f"{path}: missing column(s) {missing}")
        return list(reader)


def main(argv: list[str] | None = None) -> int:
    """Command line: `pull --from DIR [--split CSV] [--per-class N] [--limit N] [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m skin_demo.examples", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pull_cmd = commands.add_parser("pull", help="copy test-split images from a local HAM10000 copy into examples/")
    pull_cmd.add_argument("--from", dest="dataset_dir", type=Path, required=True, help="HAM10000 folder")
    pull_cmd.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split CSV (default: %(default)s)")
    pull_cmd.add_argument("--per-class", type=int, default=2, help="images per class (default: %(default)s)")
    pull_cmd.add_argument("--limit", type=int, default=MAX_EXAMPLES, help="images in all (default: %(default)s)")
    pull_cmd.add_argument("--out", type=Path, default=DEFAULT_EXAMPLES_DIR, help="target folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        examples = pull(args.dataset_dir, split=args.split, per_class=args.per_class, limit=args.limit,
                        out_dir=args.out)
    except ExamplesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(examples)} examples and {MANIFEST} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
