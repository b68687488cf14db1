"""`python -m skin_demo.train <command>`: split, fit, sweep, compare, decide, evaluate, quantize,
add-attention, compact, combine, publish, lesion-check."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_demo.train.data import read_ham10000
from skin_demo.train.split import grouped_stratified_split, write_split_csv


def main(argv: list[str] | None = None) -> int:
    from skin_demo.train import (
        attention_cli,
        combine,
        compact,
        compare,
        decide,
        evaluate_cli,
        fit_cli,
        lesion_check,
        publish,
        quantize_cli,
        sweep,
    )

    parser = argparse.ArgumentParser(prog="python -m skin_demo.train", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _register_split(subparsers)
    for module in (fit_cli, sweep, compare, decide, evaluate_cli, quantize_cli, attention_cli, compact, combine,
                   publish, lesion_check):
        module.register(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    return args.func(args)


def _register_split(subparsers) -> None:
    parser = subparsers.add_parser("split", help="write the lesion-grouped, class-stratified train/val/test split")
    parser.add_argument("--ham", type=Path, required=True, help="HAM10000 folder")
    parser.add_argument("--out", type=Path, default=Path("models/ham10000_split.csv"))
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    samples = read_ham10000(args.ham)
    write_split_csv(args.out, samples, grouped_stratified_split(samples, seed=args.seed))
    print(f"wrote {args.out} ({len(samples)} images)")
    return 0
