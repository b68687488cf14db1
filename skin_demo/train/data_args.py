"""The dataset-folder options every training command shares: --ham, --split, --isic2017 and --clinical."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_data_sources(parser: argparse.ArgumentParser, *, uses: str, clinical: bool = True,
                     split_default: Path | None = None) -> None:
    """Add the dataset-folder options to `parser`; `uses` says which subsets of the splits the command reads
    ("their validation subsets"), `split_default` makes --split optional."""
    parser.add_argument("--ham", "--data", dest="ham", type=Path, required=True,
                        help="HAM10000 folder (HAM10000_metadata.csv + images); --data is the older spelling")
    parser.add_argument("--split", type=Path, required=split_default is None, default=split_default,
                        help=f"HAM10000 lesion-grouped split CSV (image_id, ..., split); the command reads {uses}")
    parser.add_argument("--isic2017", type=Path,
                        help="ISIC 2017 folder (labels.csv + images): a second dermoscopy source, its challenge split")
    if clinical:
        parser.add_argument("--clinical", type=Path,
                            help="clinical-photo folder (labels.csv + images): the ordinary-camera domain, its "
                                 "grouped split")
