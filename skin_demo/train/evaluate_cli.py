"""`python -m skin_demo.train evaluate PACKAGE --ham ../shared/data/ham10000 --split models/ham10000_split.csv
    --isic2017 ../shared/data/isic2017 --clinical ../shared/data/clinical [--lesion-type DIR]`:
the command line of `evaluate.py` (see there for what is measured and how). A package with a head per task
(models/classifiers) is evaluated head by head in one pass over the images, its malignancy head with its own
lesion-type head."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skin_demo.imaging import ImageError
from skin_demo.modelpack import ModelPack, PackageError, load_package
from skin_demo.train.data import DataError
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.evaluate import (
    DEFAULT_BATCH_SIZE,
    EVAL_DIR,
    EvaluationError,
    domain_figures,
    evaluate_heads,
    held_out_sets,
    record_evaluation,
    record_heads_evaluation,
)
from skin_demo.train.evaluate import __doc__ as EVALUATE_DOC
from skin_demo.train.perturb import PERTURBATIONS, Perturbation
from skin_demo.train.report import missed_targets, side_by_side_table, write_evaluation
from skin_demo.train.results import Evaluation


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate an exported package on each source's held-out split through ONNX Runtime",
        description=EVALUATE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", type=Path,
                        help="package folder (model.onnx + config.json), e.g. models/classifiers (every head)")
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
        packs = load_package(args.package, threads=args.threads)
        if len(packs) > 1 and args.lesion_type:
            raise EvaluationError(f"{args.package} has a lesion-type head of its own; drop --lesion-type")
        sets = held_out_sets(args.ham, args.split, args.isic2017, args.clinical, subset=args.subset,
                             limit=args.limit, seed=args.seed)
        partner = ModelPack.load(args.lesion_type, threads=args.threads) if args.lesion_type else None
        for held_out in sets:
            print(f"evaluating {', '.join(packs)} of {args.package} on {held_out.split}: "
                  f"{len(held_out.samples)} images", flush=True)
        evaluations = evaluate_heads(args.package, sets, packs, lesion_type=partner, batch_size=args.batch_size,
                                     perturb=Perturbation(args.perturb, args.seed) if args.perturb else None)
        out, updated = _write(args, evaluations)
    except (PackageError, DataError, ImageError, EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    missed = []
    for evaluation in evaluations.values():
        missed += _print_figures(evaluation)
    print("\n" + ("targets missed:\n" + "\n".join(f"  {line}" for line in missed) if missed else "all targets met"))
    print(f"wrote {out}{updated}")
    return 0


def _write(args: argparse.Namespace, evaluations: dict[str, Evaluation]) -> tuple[Path, str]:
    """Record the evaluations as the package's own (no --out), or write the reports to --out (a folder per head
    for a package with several); returns where, and what changed in the package."""
    package, several = Path(args.package), len(evaluations) > 1
    if args.out is None:
        if several:
            record_heads_evaluation(package, evaluations)
        else:
            record_evaluation(package, *evaluations.values())
        return package / EVAL_DIR, f"; updated {package / 'config.json'} metrics and README.md"
    for task, evaluation in evaluations.items():
        write_evaluation(evaluation, args.out / task if several else args.out,
                         title=f"Evaluation: {evaluation.task} package")
    return args.out, " (package left unchanged)"


def _print_figures(evaluation: Evaluation) -> list[str]:
    """Print one task's figures per source; returns its missed targets."""
    headlines = evaluation.headline()
    print(f"\n{evaluation.task} package {evaluation.extra['package']} ({evaluation.extra['runtime']}):\n")
    print(side_by_side_table(headlines))
    if evaluation.task == "malignancy":
        for domain, f in domain_figures(evaluation).items():
            print(f"{domain}: sensitivity {f['sensitivity']}, specificity {f['specificity']} at threshold "
                  f"{f['threshold']} ({f['n_malignant']} malignant, {f['n_benign']} benign test images)")
    return missed_targets(headlines)
