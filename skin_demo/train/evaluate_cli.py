"""`python -m skin_demo.train evaluate models/<task> --ham ../shared/data/ham10000 --split models/ham10000_split.csv
    --isic2017 ../shared/data/isic2017 --clinical ../shared/data/clinical [--lesion-type models/lesion_type]`:
the command line of `evaluate.py` (see there for what is measured and how)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skin_demo.imaging import ImageError
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.train.data import DataError
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.evaluate import (
    DEFAULT_BATCH_SIZE,
    EVAL_DIR,
    EvaluationError,
    domain_figures,
    evaluate_package,
    held_out_sets,
    record_evaluation,
)
from skin_demo.train.evaluate import __doc__ as EVALUATE_DOC
from skin_demo.train.perturb import PERTURBATIONS, Perturbation
from skin_demo.train.report import missed_targets, side_by_side_table, write_evaluation


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate an exported package on each source's held-out split through ONNX Runtime",
        description=EVALUATE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", type=Path, help="package folder (model.onnx + config.json), e.g. models/lesion_type")
    add_data_sources(parser, uses="the --subset subsets (default: test)")
    parser.add_argument("--lesion-type", type=Path,
                        help="lesion-type package, for a malignancy package whose decision uses its malignant sum")
    parser.add_argument("--subset", default="test", help="which subset of each split to evaluate (default: test)")
    parser.add_argument(
        "--limit", type=int, help="evaluate a seeded random N of each source's subset (a quick check; needs --out)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write the report here and leave the package untouched (default: <package>/eval, and update the package)",
    )
    parser.add_argument(
        "--perturb", choices=PERTURBATIONS,
        help="put every image through this perturbation first (how robust the figures are, see perturb.py; "
             "needs --out)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores, at most 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --limit's choice of images and --perturb's draws")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The `evaluate` command; returns the process exit code."""
    if (args.limit is not None or args.perturb) and args.out is None:
        print(
            "error: --limit and --perturb do not measure the package as tested; pass --out DIR so their report does "
            "not replace the package's evaluation",
            file=sys.stderr,
        )
        return 2
    try:
        pack = ModelPack.load(args.package, threads=args.threads)
        sets = held_out_sets(args.ham, args.split, args.isic2017, args.clinical, subset=args.subset,
                             limit=args.limit, seed=args.seed)
        lesion_type = ModelPack.load(args.lesion_type, threads=args.threads) if args.lesion_type else None
        for held_out in sets:
            print(f"evaluating {pack.config.task} package {args.package} on {held_out.split}: "
                  f"{len(held_out.samples)} images", flush=True)
        evaluation = evaluate_package(args.package, sets, batch_size=args.batch_size, pack=pack,
                                      lesion_type=lesion_type,
                                      perturb=Perturbation(args.perturb, args.seed) if args.perturb else None)
        if args.out is None:
            record_evaluation(args.package, evaluation)
            out = Path(args.package) / EVAL_DIR
            updated = f"; updated {Path(args.package) / 'config.json'} metrics and README.md"
        else:
            write_evaluation(evaluation, args.out, title=f"Evaluation: {evaluation.task} package")
            out, updated = args.out, " (package left unchanged)"
    except (PackageError, DataError, ImageError, EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    headlines = evaluation.headline()
    print(f"\n{evaluation.task} package {evaluation.extra['package']} ({evaluation.extra['runtime']}):\n")
    print(side_by_side_table(headlines))
    if evaluation.task == "malignancy":
        for domain, f in domain_figures(evaluation).items():
            print(f"{domain}: sensitivity {f['sensitivity']}, specificity {f['specificity']} at threshold "
                  f"{f['threshold']} ({f['n_malignant']} malignant, {f['n_benign']} benign test images)")
    missed = missed_targets(headlines)
    print("\n" + ("targets missed:\n" + "\n".join(f"  {line}" for line in missed) if missed else "all targets met"))
    print(f"wrote {out}{updated}")
    return 0
