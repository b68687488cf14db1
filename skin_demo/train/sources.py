"""The joined label table of every training source: one row per image, with its source, label, group and split.

Sources (each brings benign *and* malignant examples, so no source alone can stand for a class):
- `ham10000`: 7 classes, split by `models/ham10000_split.csv` (lesion-grouped; kept exactly as committed).
- `isic2017`: nv / bkl / mel from another institution, split by the challenge's own train / val / test.
- `clinical`: ordinary camera photos (DermNet NZ + SD-198; the domain of phone uploads), 7 classes plus squamous
  cell carcinoma (malignant, no HAM10000 code), split by its own grouped `split` column.

Each row also names its image domain (`DOMAIN_OF_SOURCE`): the first two are dermoscopy, the third is clinical.

The malignant-vs-benign set is deliberately absent: its non-HAM10000 images are all malignant, and a head trained
on them learns "looks unlike HAM10000 = malignant" (issue 7).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skin_demo.taxonomy import MALIGNANT_CODES
from skin_demo.train.data import DataError, Sample, read_ham10000

COLUMNS = ["image_id", "path", "source", "domain", "dx", "malignant", "group_id", "split"]
DOMAIN_OF_SOURCE = {"ham10000": "dermoscopy", "isic2017": "dermoscopy", "clinical": "clinical"}
SPLIT_ORDER = ("test", "val", "train")  # a group reaching an earlier split is kept only there


def ham10000_table(root: Path, split_csv: Path) -> pd.DataFrame:
    """HAM10000 rows with the committed lesion-grouped split. Raises DataError for an image the split lacks."""
    samples = read_ham10000(root)
    split = pd.read_csv(split_csv, usecols=["image_id", "split"]).set_index("image_id")["split"]
    table = pd.DataFrame(
        {
            "image_id": [s.image_id for s in samples],
            "path": [s.path for s in samples],
            "source": "ham10000",
            "domain": DOMAIN_OF_SOURCE["ham10000"],
            "dx": [s.dx for s in samples],
            "malignant": [s.malignant for s in samples],
            "group_id": [s.lesion_id for s in samples],
        }
    )
    table["split"] = table["image_id"].map(split)
    unsplit = table.loc[table["split"].isna(), "image_id"].tolist()
    if unsplit:
        raise DataError(f"{len(unsplit)} HAM10000 images are not in {split_csv}, e.g. {unsplit[:5]}")
    return table[COLUMNS]


def isic2017_table(root: Path) -> pd.DataFrame:
    """ISIC 2017 rows (`labels.csv`) on the challenge split, with no `group_id` on two sides of it.

    The perceptual-hash groups chain some images across the challenge's splits. The test split stays exactly the
    challenge's; a group that reaches test is dropped from train and val, one that reaches val from train.
    """
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv} not found: point --isic2017 at the ISIC 2017 folder")
    raw = pd.read_csv(labels_csv)
    table = pd.DataFrame(
        {
            "image_id": raw["image_id"],
            "path": [root / "images" / f"{image_id}.jpg" for image_id in raw["image_id"]],
            "source": "isic2017",
            "domain": DOMAIN_OF_SOURCE["isic2017"],
            "dx": raw["dx"],
            "malignant": raw["dx"].isin(MALIGNANT_CODES),
            "group_id": "isic2017:" + raw["group_id"].astype(str),
            "split": raw["isic2017_split"],
        }
    )
    missing = [str(p) for p in table["path"] if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images named in {labels_csv} are missing, e.g. {missing[:5]}")
    return table[_without_straddling_groups(table)][COLUMNS].reset_index(drop=True)


def clinical_table(root: Path) -> pd.DataFrame:
    """Clinical-photo rows (`labels.csv`) on the set's own group-aware split. `dx` is empty (None) for squamous
    cell carcinoma, which has no HAM10000 class: it teaches malignancy only."""
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv} not found: point --clinical at the clinical-photo folder")
    raw = pd.read_csv(labels_csv, keep_default_na=False)
    table = pd.DataFrame(
        {
            "image_id": raw["image_id"],
            "path": [root / "images" / f"{image_id}.jpg" for image_id in raw["image_id"]],
            "source": "clinical",
            "domain": DOMAIN_OF_SOURCE["clinical"],
            "dx": [dx or None for dx in raw["ham7"]],
            "malignant": raw["malignant"].astype(int).astype(bool),
            "group_id": "clinical:" + raw["group_id"].astype(str),
            "split": raw["split"],
        }
    )
    missing = [str(p) for p in table["path"] if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images named in {labels_csv} are missing, e.g. {missing[:5]}")
    return table[COLUMNS]


def label_table(ham10000: Path, ham10000_split: Path, isic2017: Path | None,
                clinical: Path | None = None) -> pd.DataFrame:
    """All sources' rows in one table (COLUMNS)."""
    tables = [ham10000_table(ham10000, ham10000_split)]
    if isic2017 is not None:
        tables.append(isic2017_table(isic2017))
    if clinical is not None:
        tables.append(clinical_table(clinical))
    return pd.concat(tables, ignore_index=True)


def samples(table: pd.DataFrame, split: str) -> list[Sample]:
    """The rows of one split as `Sample`s (group id as lesion id), in table order."""
    rows = table[table["split"] == split]
    return [
        Sample(r.image_id, Path(r.path), r.group_id, r.dx if isinstance(r.dx, str) else None, bool(r.malignant),
               r.source, r.domain)
        for r in rows.itertuples(index=False)
    ]


def _without_straddling_groups(table: pd.DataFrame) -> pd.Series:
    rank = table["split"].map({name: i for i, name in enumerate(SPLIT_ORDER)})
    earliest = rank.groupby(table["group_id"]).transform("min")
    return rank == earliest
