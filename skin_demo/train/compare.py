"""`python -m skin_demo.train compare RUN...`: fit runs side by side on validation, at a matched number of epochs.

Runs that differ in one setting (architecture, colour constancy, phone look, one network for both tasks or one per
task) but share the schedule can be compared epoch for epoch, so a run still in progress is compared with a finished
one over the epochs both have: each run's best validation score within those epochs, chosen the way `fit` chooses
(raw or EMA weights, mean over sources), and its mean over the last few of them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from skin_demo.taxonomy import SOURCE_NAMES

METRICS = {"lesion_type": "lesion type: balanced accuracy", "malignancy": "malignancy: ROC AUC"}
SCHEDULE_ARGS = ("epochs", "warm_epochs", "warm_size", "image_size", "batch_size", "lr", "seed")
MEAN_OF_LAST = 3  # epochs averaged in the steadier second table
# How a run is carried out, not what it trains: never a column of the comparison.
MECHANICS_ARGS = ("command", "out", "resume", "cache", "threads", "workers", "no_export", "limit_train", "limit_val")


@dataclass(frozen=True)
class Best:
    """The best validation score of one task within the first `within` epochs of a run."""

    epoch: int
    weights: str
    per_source: dict[str, float]  # source -> score, plus "selection" (their mean)


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="fit runs side by side on validation", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with args.json and history.json)")
    parser.add_argument("--epochs", type=int, help="compare within this many epochs (default: the fewest any run has)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(format_comparison(args.runs, args.epochs))
    return 0


def best_within(history: list[dict], task: str, within: int) -> Best:
    """The epoch and weights (raw or EMA) with the highest validation `selection` for `task` in the first epochs."""
    candidates = [
        (record[weights][task]["selection"], record["epoch"], weights)
        for record in history[:within]
        for weights in ("raw", "ema")
        if weights in record
    ]
    if not candidates:
        raise ValueError(f"no validation record for {task} in the first {within} epochs")
    _, epoch, weights = max(candidates, key=lambda c: (c[0], -c[1]))  # ties: the earlier epoch, as fit keeps it
    return Best(epoch, weights, history[epoch - 1][weights][task])


def mean_of_last(history: list[dict], task: str, within: int, last: int = MEAN_OF_LAST) -> dict[str, float]:
    """Each source's validation score (and "selection") for `task`, averaged over the last `last` of the first
    `within` epochs, EMA weights where the run has them: steadier than one best epoch when runs are stopped early."""
    records = history[max(0, within - last):within]
    weights = "ema" if all("ema" in record for record in records) else "raw"
    sources = records[-1][weights][task]
    return {s: sum(record[weights][task][s] for record in records) / len(records) for s in sources}


def format_comparison(runs: list[Path], within: int | None = None) -> str:
    """Markdown tables, one row per run: the settings that differ, and per task and source its best validation
    score within the first `within` epochs, then the mean over the last MEAN_OF_LAST of them."""
    loaded = [(run, json.loads((run / "args.json").read_text()), json.loads((run / "history.json").read_text()))
              for run in runs]
    within = within or min(len(history["history"]) for _, _, history in loaded)
    schedule_differs = [k for k in SCHEDULE_ARGS if len({json.dumps(args.get(k)) for _, args, _ in loaded}) > 1]
    tasks = [t for t in METRICS if all(t in args["tasks"] for _, args, _ in loaded)]
    sources = sorted({s for _, _, history in loaded for record in history["history"][:within]
                      for weights in ("raw", "ema") if weights in record
                      for task in tasks for s in record[weights][task] if s != "selection"})
    names = " / ".join(SOURCE_NAMES.get(s, s) for s in sources)
    settings = differing_settings([args for _, args, _ in loaded])
    header = ["| run | " + "".join(f"{name} | " for name in settings) + "epochs done | " + " | ".join(
        f"{METRICS[t]} ({names} / mean)" for t in tasks) + " |",
        "|---|" + "---|" * len(settings) + "---|" + "---|" * len(tasks)]

    def row(run: Path, args: dict, history: dict, cells: list[str]) -> str:
        return (f"| {run.name} | " + "".join(f"{_setting(args.get(name))} | " for name in settings)
                + f"{len(history['history'])} of {args['epochs']} | " + " | ".join(cells) + " |")

    def scores(per_source: dict[str, float]) -> str:
        return " / ".join(f"{per_source.get(s, float('nan')):.3f}" for s in sources) + \
            f" / **{per_source['selection']:.3f}**"

    lines = [f"Best validation score within the first {within} epochs (the raw or EMA weights, chosen as fit does)."]
    if schedule_differs:
        lines.append(f"Warning: the runs' schedules differ in {', '.join(schedule_differs)}; the comparison is unfair.")
    lines += ["", *header]
    for run, args, history in loaded:
        best = [best_within(history["history"], task, within) for task in tasks]
        lines.append(row(run, args, history, [f"{scores(b.per_source)} @ {b.epoch} {b.weights}" for b in best]))
    lines += ["", f"Mean over epochs {max(1, within - MEAN_OF_LAST + 1)}-{within} (EMA weights where the run has "
                  "them): one best epoch of a short run is noisy.", "", *header]
    for run, args, history in loaded:
        lines.append(row(run, args, history, [scores(mean_of_last(history["history"], task, within))
                                              for task in tasks]))
    return "\n".join(lines)


def differing_settings(runs_args: list[dict]) -> list[str]:
    """The training settings (args.json keys) whose values differ between the runs, in args order; the
    architecture always, so a table says what was trained."""
    names = list(dict.fromkeys(name for args in runs_args for name in args if name not in MECHANICS_ARGS))
    differing = [name for name in names if len({json.dumps(args.get(name)) for args in runs_args}) > 1]
    return differing if "arch" in differing else ["arch", *differing]


def _setting(value) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)
