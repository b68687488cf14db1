"""`python -m skin_demo.train sweep`: compare the class-imbalance strategies on validation, pick the winner.

Each strategy gets the same short training run (same seed, data and schedule); the winner is the strategy
with the best validation balanced accuracy of the lesion-type head. `sweep.json` records every result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skin_demo.train import fit_cli, imbalance
from skin_demo.train.fit import fit


def register(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="compare imbalance strategies on validation", description=__doc__)
    parser.add_argument("--strategies", nargs="+", choices=imbalance.STRATEGIES, default=list(imbalance.STRATEGIES))
    parser.add_argument("fit_args", nargs=argparse.REMAINDER,
                        help="arguments for each `fit` run after `--`, e.g. -- --ham DIR --epochs 2 --out runs/sweep")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = sweep(args.strategies, [a for a in args.fit_args if a != "--"])
    print(json.dumps(results, indent=2))
    return 0


def sweep(strategies: list[str], fit_argv: list[str]) -> dict:
    """Run `fit --no-export` once per strategy into <out>/<strategy>; returns and writes the comparison."""
    parser = argparse.ArgumentParser(prog="fit")
    fit_cli.register(parser.add_subparsers())
    base = parser.parse_args(["fit", *fit_argv])
    out = Path(base.out)
    results = {}
    for strategy in strategies:
        history_path = out / strategy / "history.json"
        finished = history_path.is_file() and json.loads(history_path.read_text())["epoch"] >= base.epochs
        if not finished:  # a finished run is reused; an interrupted one resumes from its last epoch
            args = parser.parse_args(["fit", *fit_argv, "--imbalance", strategy, "--out", str(out / strategy),
                                      "--no-export", "--resume"])
            fit(args)
        history = json.loads(history_path.read_text())
        results[strategy] = {task: best["metric"] for task, best in history["best"].items()}
    ranked = sorted(results, key=lambda s: results[s].get("lesion_type", 0.0), reverse=True)
    summary = {"selection": "best validation balanced accuracy (lesion_type)", "winner": ranked[0],
               "results": results, "fit_args": fit_argv}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2))
    return summary
