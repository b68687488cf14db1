"""`python -m skin_demo.train lesion-check`: fit the image-domain check (models/lesion_check): is this a dermoscopy
image, an ordinary (clinical) photo of a skin lesion, or not a skin-lesion close-up at all?

A frozen ImageNet EfficientNet-Lite0, cut after stage 6, turns each image (192 px) into the pooled outputs of its
stages 3-6, and a small MLP (one hidden layer) on those features tells dermoscopy close-ups (HAM10000 and ISIC 2017:
`dermoscopy`) and ordinary camera photos of a lesion (DermNet NZ and SD-198: `clinical`) from what else a visitor
may upload (../not_lesion: everyday photos, rashes, healthy skin, hands and faces, documents; plus generated flat
pictures: `not_lesion`). Network and MLP (its weights copied into torch layers) are exported as one
ONNX graph, so serving runs the check like any other package and calls it with `postprocess.lesion_check` and
`postprocess.image_domain`. Features are extracted once with ONNX Runtime and cached under `--out`. Each positive
source is also left out once (`loso.py`).

All classes get the same nuisances (colour casts, black vignettes and frames, squashed aspect, low resolution and
JPEG, rotations): dermoscopy from another clinic looks like that, and a nuisance seen on one class only would
become a cue. The decision threshold is the highest P(dermoscopy) + P(clinical) that still passes 99 % of each
dermoscopy source's and 95 % of each clinical atlas's validation images (`--min-val-pass`). Test numbers come from the exported file through the serving path (`load_image`, `preprocess`,
`ModelPack`, `lesion_check`), per source and per not_lesion category.

    python -m skin_demo.train lesion-check --ham ../shared/data/ham10000 --isic ../shared/data/isic2017 \\
        --not-lesion ../shared/data/not_lesion --mvb ../shared/data/malignant_vs_benign \\
        --clinical ../shared/data/clinical \\
        --out runs/lesion_check --package models/lesion_check
    python -m skin_demo.train lesion-check --show models/lesion_check   # print the recorded table
    python -m skin_demo.train lesion-check --measure DIR --ham ... --isic ... --not-lesion ... --mvb ... \
        --clinical ...     # the test figures of a changed file again, e.g. the int8 copy `compact` wrote
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skin_demo.modelpack import ModelPack
from skin_demo.train.lesion_check.head import MIN_VAL_PASS_RATE
from skin_demo.train.lesion_check.pipeline import fit, measure
from skin_demo.train.lesion_check.table import format_table
from skin_demo.train.model import DEFAULT_ARCHITECTURE


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lesion-check", help="fit the 'is this a skin-lesion close-up?' package", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--show", type=Path, metavar="PACKAGE",
                        help="print the table recorded in a package; fit nothing")
    parser.add_argument("--measure", type=Path, metavar="PACKAGE",
                        help="measure a finished package's test figures again (its file changed, e.g. int8 "
                             "weights from `compact`) and record them; fit nothing")
    parser.add_argument("--ham", type=Path, help="HAM10000 folder (positives)")
    parser.add_argument("--ham-split", type=Path, default=Path("models/ham10000_split.csv"))
    parser.add_argument("--isic", type=Path, help="ISIC 2017 folder (positives, split by isic2017_split)")
    parser.add_argument("--not-lesion", type=Path, help="not_lesion folder (negatives)")
    parser.add_argument("--mvb", type=Path, help="malignant-vs-benign folder: its non-HAM images are checked only")
    parser.add_argument("--clinical", type=Path, help="clinical-photo folder (positives of the clinical domain)")
    parser.add_argument("--not-lesion-split", type=Path, default=Path("models/not_lesion_split.csv"),
                        help="where to write the not_lesion fit/val/test split")
    parser.add_argument("--arch", default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--no-pretrained", action="store_true", help="random backbone weights (tests)")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--taps", type=int, nargs="+", default=[3, 4, 5, 6],
                        help="backbone stages whose pooled outputs are the features (lite0 has stages 0-6)")
    parser.add_argument("--positive-copies", type=int, default=1, help="augmented copies of each positive")
    parser.add_argument("--clinical-copies", type=int, default=3, help="augmented copies of each clinical photo")
    parser.add_argument("--negative-copies", type=int, default=3, help="augmented copies of each negative")
    parser.add_argument("--min-val-pass", type=float, nargs=2, metavar=("DERMOSCOPY", "CLINICAL"),
                        default=[MIN_VAL_PASS_RATE["dermoscopy"], MIN_VAL_PASS_RATE["clinical"]],
                        help="share of each dermoscopy source's / clinical atlas's validation images the threshold "
                             "must pass")
    parser.add_argument("--flat-images", type=int, default=400, help="generated flat pictures to fit on")
    parser.add_argument("--cost-images", type=int, default=100, help="images timed for the cost figure")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the machine is usually shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="run folder (feature cache, args.json)")
    parser.add_argument("--package", type=Path, help="package folder to write, e.g. models/lesion_check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """With --show, print a package's recorded table; with --measure, measure its test figures again; otherwise
    fit the package. Prints the table."""
    if args.show:
        print(format_table(ModelPack.load(args.show, threads=1).config))
        return 0
    needed = ("ham", "isic", "not_lesion", "mvb", "clinical") + (() if args.measure else ("out", "package"))
    missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
    if missing:
        raise SystemExit(f"lesion-check: {', '.join(missing)} required (or --show PACKAGE)")
    config = measure(args) if args.measure else fit(args)
    print(format_table(config))
    return 0
